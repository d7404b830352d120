# LightViT-S, ImageNet-1k: the LightViT-T recipe (same schedule, drop-path 0.1)
# with the S widths.
_base_ = './lightvit-tiny_8xb128_in1k.py'

model = dict(
    backbone=dict(arch='small'),
    neck=dict(in_channels=384))

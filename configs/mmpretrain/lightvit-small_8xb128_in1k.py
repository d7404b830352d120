# LightViT-S, ImageNet-1k: the LightViT-T recipe (see its header for every
# official source and every remaining difference: same schedule, drop-path
# 0.1 as the official README's command) with the S widths.
_base_ = './lightvit-tiny_8xb128_in1k.py'

model = dict(
    backbone=dict(arch='small'),
    neck=dict(in_channels=384))

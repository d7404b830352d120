# LightViT-B, ImageNet-1k: the LightViT-T recipe with the B widths, drop-path
# 0.3 and mixed precision (the official B was trained with AMP).
_base_ = './lightvit-tiny_8xb128_in1k.py'

model = dict(
    backbone=dict(arch='base', drop_path_rate=0.3),
    neck=dict(in_channels=512))

optim_wrapper = dict(type='AmpOptimWrapper', loss_scale='dynamic')

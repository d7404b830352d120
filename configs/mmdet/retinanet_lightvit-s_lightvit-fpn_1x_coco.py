# RetinaNet + LightViT-S, COCO 1x: the LightViT-T RetinaNet recipe with the S widths.
_base_ = './retinanet_lightvit-t_lightvit-fpn_1x_coco.py'

# Override with --cfg-options model.backbone.init_cfg.checkpoint=PATH
pretrained = 'https://github.com/hunto/LightViT/releases/download/v0.0.1/lightvit_small_80.9.ckpt'  # noqa

model = dict(
    backbone=dict(arch='small', init_cfg=dict(checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384]))

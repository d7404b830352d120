# Mask R-CNN + LightViT-B, COCO 1x: the LightViT-T recipe with the B widths
# (official detection/configs/mask_rcnn_lightvit_base_fpn_1x_coco.py; the
# official B config keeps drop-path 0.1 for detection).
_base_ = './mask-rcnn_lightvit-t_lightvit-fpn_1x_coco.py'

# Override with --cfg-options model.backbone.init_cfg.checkpoint=PATH
pretrained = 'https://github.com/hunto/LightViT/releases/download/v0.0.1/lightvit_base_82.1.ckpt'  # noqa

model = dict(
    backbone=dict(arch='base', init_cfg=dict(checkpoint=pretrained)),
    neck=dict(in_channels=[128, 256, 512]))

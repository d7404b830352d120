# Mask R-CNN + LightViT-S, COCO 3x+ms: the LightViT-T 3x recipe with the S widths
# (official detection/configs/mask_rcnn_lightvit_small_fpn_3x_ms_coco.py).
# Sources and remaining differences: the T 1x and 3x configs' headers; the
# official small global tokens load from the checkpoint as here.
_base_ = './mask-rcnn_lightvit-t_lightvit-fpn_ms-crop-3x_coco.py'

# Override with --cfg-options model.backbone.init_cfg.checkpoint=PATH
pretrained = 'https://github.com/hunto/LightViT/releases/download/v0.0.1/lightvit_small_80.9.ckpt'  # noqa

model = dict(
    backbone=dict(arch='small', init_cfg=dict(checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384]))

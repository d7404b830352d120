# Mask R-CNN + LightViT-B, COCO 3x+ms: the LightViT-T 3x recipe with the B widths
# (official detection/configs/mask_rcnn_lightvit_base_fpn_3x_ms_coco.py).
# Sources and remaining differences: the T 1x and 3x configs' headers; the
# official base global tokens load from the checkpoint as here.
_base_ = './mask-rcnn_lightvit-t_lightvit-fpn_ms-crop-3x_coco.py'

# Override with --cfg-options model.backbone.init_cfg.checkpoint=PATH
pretrained = 'https://github.com/hunto/LightViT/releases/download/v0.0.1/lightvit_base_82.1.ckpt'  # noqa

model = dict(
    backbone=dict(arch='base', init_cfg=dict(checkpoint=pretrained)),
    neck=dict(in_channels=[128, 256, 512]))

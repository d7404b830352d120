# Mask R-CNN + LightViT-B, COCO 1x: the LightViT-T recipe with the B widths
# (official detection/configs/mask_rcnn_lightvit_base_fpn_1x_coco.py: it
# differs from the T file in lines 10-11 and 18 only; detection/lightvit.py:455
# keeps drop-path 0.1 for B). The T config's header lists the sources and the
# remaining differences; B has the official 24 global tokens, loaded from its
# checkpoint as the official code does, so difference 1 there does not apply.
_base_ = './mask-rcnn_lightvit-t_lightvit-fpn_1x_coco.py'

# Override with --cfg-options model.backbone.init_cfg.checkpoint=PATH
pretrained = 'https://github.com/hunto/LightViT/releases/download/v0.0.1/lightvit_base_82.1.ckpt'  # noqa

model = dict(
    backbone=dict(arch='base', init_cfg=dict(checkpoint=pretrained)),
    neck=dict(in_channels=[128, 256, 512]))

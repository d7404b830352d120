# Mask R-CNN + LightViT-S, COCO 1x: the LightViT-T recipe with the S widths
# (official detection/configs/mask_rcnn_lightvit_small_fpn_1x_coco.py: it
# differs from the T file in lines 10-11 and 18 only). The T config's header
# lists the sources and the remaining differences; S has the official 16
# global tokens (detection/lightvit.py:445), loaded from its checkpoint, as
# the official code does, so difference 1 there does not apply.
_base_ = './mask-rcnn_lightvit-t_lightvit-fpn_1x_coco.py'

# Override with --cfg-options model.backbone.init_cfg.checkpoint=PATH
pretrained = 'https://github.com/hunto/LightViT/releases/download/v0.0.1/lightvit_small_80.9.ckpt'  # noqa

model = dict(
    backbone=dict(arch='small', init_cfg=dict(checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384]))

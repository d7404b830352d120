# Mask R-CNN + LightViT-T, COCO 1x, exactly as the released official config
# builds it (github.com/hunto/LightViT detection/configs/
# mask_rcnn_lightvit_tiny_fpn_1x_coco.py with detection/lightvit.py:433-437):
# 512 global tokens, not the 8 of the ImageNet checkpoint. mmcv 1.x's
# non-strict load skipped the (1, 8, 64) checkpoint tokens for the (1, 512, 64)
# parameter, so the official T detector trains from 512 zero tokens
# (detection/lightvit.py:376: torch.zeros); global_token_init='zeros' does the
# same here. Everything else is mask-rcnn_lightvit-t_lightvit-fpn_1x_coco.py.
#
# Which one made the paper's table? Most likely the 8-token default: the
# paper reports 28M params and 187 GFLOPs for this detector, which the 8-token
# model gives (187.65 G counted by tools/analysis/get_flops.py, 186.66 G
# without the attention products, as mmcv 1.x counted). This one counts
# 206.33 G (190.05 G without them: +3.4 G where the paper's counter would see
# it), and the paper's T ImageNet checkpoint has 8 tokens. This config
# reproduces the released code, not a paper number.
_base_ = './mask-rcnn_lightvit-t_lightvit-fpn_1x_coco.py'

model = dict(
    backbone=dict(num_tokens=512, init_cfg=dict(global_token_init='zeros')))

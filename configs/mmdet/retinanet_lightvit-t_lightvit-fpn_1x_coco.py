# RetinaNet + LightViT-T + LightViTFPN, COCO 1x (not in the paper; the official
# code has Mask R-CNN only).
#
# Neck: RetinaNet's head expects 5 levels at strides 8, 16, 32, 64, 128 (its
# anchor generator's strides). LightViT gives exactly the first three (stages
# 0..2 at strides 8/16/32), so LightViTFPN runs as a plain FPN
# (num_extra_trans_convs=0: no stride-4 level, which RetinaNet does not use)
# starting from the stride-8 map, and adds P6 and P7 by stride-2 3x3 convs,
# the first on the last backbone map (add_extra_convs='on_input'), as mmdet's
# RetinaNet-R50 FPN does on C5.
#
# Optimizer: AdamW lr 1e-4, the lr of mmdet's AdamW RetinaNets (PVT, PVTv2,
# resnet_strikes_back), with weight decay 0.05 as mmdet's
# retinanet_r50-rsb-pre_fpn_1x_coco.py (mmdet's PVT RetinaNets use 1e-4; the
# paper's Mask R-CNN recipe 0.04). Untested on COCO: a rerun should report it.
# LightViT's no-decay list as in the Mask R-CNN configs. Batch 8 GPUs x 2,
# 500-iteration linear warm-up, steps at epochs 8 and 11 (mmdet's 1x).
# Backbone as in the Mask R-CNN recipe: drop-path 0.1, stem BN frozen.
_base_ = ['mmdet::retinanet/retinanet_r50_fpn_1x_coco.py', '../_base_/lightvit_no_decay.py']
custom_imports = dict(imports=['lightvit_mm'], allow_failed_imports=False)

# The official ImageNet weights; override with
# --cfg-options model.backbone.init_cfg.checkpoint=PATH
pretrained = 'https://github.com/hunto/LightViT/releases/download/v0.0.1/lightvit_tiny_78.7.ckpt'  # noqa

model = dict(
    backbone=dict(
        _delete_=True,
        type='LightViT',
        arch='tiny',
        drop_path_rate=0.1,
        out_indices=(0, 1, 2),
        norm_eval=True,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(
        _delete_=True,
        type='LightViTFPN',
        in_channels=[64, 128, 256],
        out_channels=256,
        num_outs=5,
        num_extra_trans_convs=0,
        add_extra_convs='on_input'))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=_base_.lightvit_no_decay)

# Mask R-CNN + LightViT-T + LightViTFPN, COCO 1x: the paper's recipe (Sec. 4.2)
# as the official code runs it (github.com/hunto/LightViT; "C:n" below =
# detection/configs/mask_rcnn_lightvit_tiny_fpn_1x_coco.py line n, "M:n" =
# detection/configs/_base_/models/mask_rcnn_r50_fpn.py, "D:n" =
# detection/configs/_base_/datasets/coco_instance.py):
# - 8 GPUs x 2 images (C:24, D:31); AdamW lr 2e-4, betas (0.9, 0.999), weight
#   decay 0.04 (C:26) with none on norms, the stem BNs, relative position-bias
#   tables and global tokens (C:27-34; the same tensors, checked by
#   tests/test_configs/test_recipe.py); no gradient clipping (C:39), fp32 (C:37-38);
# - 500-iteration linear warm-up from 0.001 x lr, lr x0.1 after epochs 8 and
#   11, 12 epochs (C:41-47);
# - backbone: drop-path 0.1 (C:12), out_indices (0, 1, 2) (C:13), stem BN
#   statistics frozen (C:14, stem_norm_eval=True = our norm_eval=True), the
#   official ImageNet weights (C:10);
# - neck: LightViTFPN, 256 channels, 5 levels, one transposed-conv level
#   (C:16-22), Xavier-uniform convs (detection/lightvit_fpn.py:192-196);
# - heads, train/test cfg and the 1333x800 pipeline: mmdet's Mask R-CNN R50-FPN
#   base, the values of M and D (e.g. M:103-104, M:112-120, D:8-9, D:19).
# Remaining differences from the official code:
# 1. Global tokens (T only): 8, loaded from the ImageNet checkpoint. The
#    released code builds 512 (detection/lightvit.py:435) and trains them from
#    zeros (the checkpoint's 8 do not fit); that is
#    mask-rcnn_lightvit-t-tok512_lightvit-fpn_1x_coco.py. This one is the
#    default because it has the paper's 187 GFLOPs.
# 2. mmdet 3.3 instead of mmdet 2.14 / mmcv 1.x: the same heads and settings,
#    re-implemented (e.g. RoIAlign, samplers, data loading order).
_base_ = [
    'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py', '../_base_/lightvit_no_decay.py'
]
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
        num_extra_trans_convs=1))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=0.04),
    paramwise_cfg=_base_.lightvit_no_decay)

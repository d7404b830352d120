# Mask R-CNN + LightViT-T + LightViTFPN, COCO 1x: the paper's recipe (Sec. 4.2;
# official detection/configs/mask_rcnn_lightvit_tiny_fpn_1x_coco.py): 8 GPUs x 2
# images, AdamW lr 2e-4, weight decay 0.04 with none on norms, position-bias
# tables, global tokens and the stem BNs, 500-iteration linear warm-up, steps at
# epochs 8 and 11, drop-path 0.1, stem BN statistics frozen.
_base_ = [
    'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py', '../_base_/lightvit_no_decay.yml'
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

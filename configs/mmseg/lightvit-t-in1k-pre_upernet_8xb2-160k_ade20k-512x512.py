# UPerNet + LightViT-T, ADE20K, 160k iterations, 512x512 crops, 8 GPUs x 2.
# The official LightViT code releases no segmentation configs: this follows
# mmseg's recipe for Swin-like backbones (swin-tiny-patch4-window7-in1k-pre_
# upernet_8xb2-160k_ade20k-512x512.py, inherited): AdamW lr 6e-5, betas
# (0.9, 0.999), weight decay 0.01, 1500-iteration linear warm-up then poly
# (power 1) decay to 0, UPerHead + auxiliary FCNHead (loss weight 0.4), SyncBN
# in the heads, the ADE20K 512x512 pipeline.
#
# Heads: LightViT has no stride-4 stage; its three levels (strides 8/16/32)
# go to UPerHead directly (in_index [0, 1, 2]): the PPM (pool scales 1, 2, 3, 6)
# runs on the stride-32 map, UPerNet's own FPN fuses the three levels at
# stride 8, and the segmentor upsamples the logits to the image size. The
# auxiliary FCN head takes the stride-16 level (in_index 1), the level before
# the last as Swin's auxiliary head does (its stage 2 of 0..3).
#
# Backbone: drop-path 0.1 for T, S and B (the paper gives no segmentation
# setting; 0.1 is its detection value for all three). norm_eval=True: the
# stem BatchNorms keep their ImageNet statistics (their scale and shift still
# train). They are plain per-GPU BatchNorms, and with 2 crops per GPU the
# batch statistics would come from 2 images; the one official downstream
# recipe, detection, has the same 2 images per GPU and freezes them
# (detection/configs/mask_rcnn_lightvit_tiny_fpn_1x_coco.py:14,
# stem_norm_eval=True). mmseg's BN backbones (ResNet) use SyncBN at 8x2 for
# this reason; a SyncBN stem would change the pretrained model.
# No official recipe exists for UPerNet/ADE20K, so a rerun of these configs
# reproduces no official run; they follow mmseg's Swin recipe instead.
# No weight decay on norms (LayerNorms, stem BNs, head BNs via norm_decay_mult),
# relative_position_bias_table and global_token, as in the detection configs.
_base_ = [
    'mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py',
    '../_base_/lightvit_no_decay.py',
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
    decode_head=dict(
        in_channels=[64, 128, 256], in_index=[0, 1, 2], pool_scales=(1, 2, 3, 6),
        num_classes=150),
    auxiliary_head=dict(in_channels=128, in_index=1, num_classes=150))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=_base_.lightvit_no_decay)
auto_scale_lr = dict(enable=False, base_batch_size=16)  # 8 GPUs x 2: tools/train.py --auto-scale-lr

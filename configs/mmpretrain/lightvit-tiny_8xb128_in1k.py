# LightViT-T, ImageNet-1k 224x224, 8 GPUs x 128 images, 300 epochs: the official
# recipe, github.com/hunto/image_classification_sota at the commit LightViT pins
# (36539b6; "Y:n" below = configs/strategies/lightvit/config.yaml line n,
# "A:n" = lib/utils/args.py, "O:n" = lib/dataset/augment_ops.py, "T:n" =
# lib/dataset/transform.py, "B:n" = lib/dataset/builder.py, "R:n" = tools/train.py),
# on mmpretrain's Swin/DeiT bases.
# - Optimizer: AdamW lr 1e-3 (Y:13; batch 1024, Y:2 x 8 GPUs), weight decay 0.04
#   (Y:39), eps 1e-8 (Y:20), betas (0.9, 0.999) (Y:19 null: torch's default);
#   no decay on 1-D parameters and biases, global_token and the
#   relative_position_bias_tables (lib/utils/optim.py:57, lib/models/lightvit.py
#   no_weight_decay). No gradient clipping (A:45).
# - Schedule: linear warm-up over 20 epochs from 1e-7 (Y:37-38; start_factor
#   1e-4), stepped once per epoch as the official GradualWarmupScheduler does,
#   then cosine to 1e-6 (Y:14), updated every iteration (Y:4).
# - Data: RandomResizedCrop 224 bicubic (Y:22, T:19), flip, RandAugment
#   rand-m9-mstd0.5 (Y:1): 2 ops drawn with replacement from the official 19,
#   each applied with probability 0.5 (O:524-559), magnitude ~ N(9, 0.5); fill
#   = the ImageNet mean, bicubic (T:29-33). The policies below are the official
#   list with the official magnitude mappings (O:199-277); Zoom, Blur, Skew and
#   Distort are lightvit_mm's (lightvit_mm/datasets/transforms.py), checked
#   pixel for pixel against the official functions. RandomErasing p=0.25, area
#   0.02-1/3, aspect 0.3-3.3, per-pixel normal noise (Y:25-26, O:661-733).
#   Color jitter 0.3 (Y:3) is inactive in the official code (only without
#   RandAugment, T:35-37), so none here. Val: resize 256 + center crop 224,
#   bicubic (T:47-58). drop_last=True (B:75).
# - Batch augments: Mixup(alpha 0.2) or CutMix(alpha 1.0), one of the two on
#   every batch with equal probability (Y:29-33).
# - Loss: label smoothing 0.1 (A:29) mixed into the mixup/cutmix soft targets,
#   soft-target cross-entropy; mmpretrain's LabelSmoothLoss(0.1,
#   mode='original') on the mixed targets gives the same targets.
# - Model: drop-path 0.1 (Y:9); LightViTClsNeck + LinearClsHead is the official
#   classifier (norm, neck, head), truncated-normal init (lib/models/lightvit.py).
# - Run: seed 42 + rank (Y:36, R:46; mmengine diff_rank_seed), fp32, the best
#   top-1 checkpoint kept (lib/utils/misc.py:80-120: 'best.pth.tar').
# Differences that remain (mmpretrain/mmengine cannot express them):
# 1. RandAugment magnitude noise: mmpretrain clips N(9, 0.5) to [0, 10]; the
#    official one does not (O:543), so ~2% of its draws go past level 10.
# 2. The 15 standard ops run on mmcv/cv2 (Rotate, Shear, Translate: cv2
#    bicubic; the enhance ops: mmcv's ports of Pillow's ImageEnhance) where the
#    official ones run Pillow (O:82-196): the same geometry and factors, pixel
#    values differ by interpolation rounding. The official Shear/Translate pick
#    bilinear or bicubic at random only without an interpolation hparam; it sets
#    one (T:32), so both are bicubic.
# 3. Random erasing: the official erases the normalised float image (T:40-43)
#    with noise that is neither clipped nor rounded, and retries up to 10 times
#    until the box fits (O:711-722); mmpretrain's erases the uint8 image with
#    noise clipped to 0-255 and truncated, one draw clipped to the image.
# 4. Checkpoints: the official keeps the 10 best epochs by top-1 plus the last
#    (lib/utils/misc.py:65-101); here the last 10 epochs plus the best.
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/schedules/imagenet_bs1024_adamw_swin.py',
    'mmpretrain::_base_/default_runtime.py',
    '../_base_/lightvit_no_decay.py',
]
custom_imports = dict(imports=['lightvit_mm'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='LightViT', arch='tiny', out_type='raw', out_indices=-1, drop_path_rate=0.1),
    neck=dict(type='LightViTClsNeck', in_channels=256, out_channels=1280),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=1280,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        init_cfg=dict(type='TruncNormal', layer='Linear', std=.02, bias=0.),
        cal_acc=False),
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.2), dict(type='CutMix', alpha=1.0)]))

# RandAugment rand-m9-mstd0.5 with the official 19 ops (O:18-38) and magnitude
# mappings (O:199-277). mmpretrain maps level m to lo + m / 10 * (hi - lo); the
# enhance ops take 1 + magnitude as their factor; Posterize rounds bits up and
# Solarize inverts pixels >= thr: the ranges below give the official floor(0.4 m)
# bits and floor(25.6 m) threshold for every non-integer draw.
official_rand_augment_policies = [
    dict(type='Distort', magnitude_range=(10, 20)),              # O:260, 280
    dict(type='Zoom', magnitude_range=(0, 0.4)),                 # O:264, 362
    dict(type='Blur', magnitude_range=(0, 0.5)),                 # O:268, 421
    dict(type='Skew', magnitude_range=(0, 0.3)),                 # O:274, 392
    dict(type='AutoContrast'),                                   # O:147
    dict(type='Equalize'),                                       # O:155
    dict(type='Invert'),                                         # O:151
    dict(type='Rotate', magnitude_range=(0, 30)),                # O:199, 114
    dict(type='Posterize', magnitude_range=(-1, 3)),             # O:244 (PosterizeTpu)
    dict(type='Solarize', magnitude_range=(-1, 255)),            # O:250, 159
    dict(type='SolarizeAdd', magnitude_range=(0, 110)),          # O:255, 163
    dict(type='ColorTransform', magnitude_range=(-0.9, 0.9), random_negative_prob=0.),  # O:206
    dict(type='Contrast', magnitude_range=(-0.9, 0.9), random_negative_prob=0.),        # O:206
    dict(type='Brightness', magnitude_range=(-0.9, 0.9), random_negative_prob=0.),      # O:206
    dict(type='Sharpness', magnitude_range=(-0.9, 0.9), random_negative_prob=0.),       # O:206
    dict(type='Shear', magnitude_range=(0, 0.3), direction='horizontal'),  # O:211, 82
    dict(type='Shear', magnitude_range=(0, 0.3), direction='vertical'),    # O:211, 87
    dict(type='Translate', magnitude_range=(0, 0.45), direction='horizontal'),  # O:225, 92
    dict(type='Translate', magnitude_range=(0, 0.45), direction='vertical'),    # O:225, 98
]
bgr_mean = _base_.data_preprocessor['mean'][::-1]
bgr_std = _base_.data_preprocessor['std'][::-1]
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=224, backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='RandAugment',
         policies=official_rand_augment_policies,
         num_policies=2,
         total_level=10,
         magnitude_level=9,
         magnitude_std=0.5,
         hparams=dict(pad_val=[round(x) for x in bgr_mean], interpolation='bicubic')),
    dict(type='RandomErasing',
         erase_prob=0.25,
         mode='rand',
         min_area_ratio=0.02,
         max_area_ratio=1 / 3,
         aspect_range=(0.3, 1 / 0.3),
         fill_color=bgr_mean,
         fill_std=bgr_std),
    dict(type='PackInputs'),
]
train_dataloader = dict(  # x 8 GPUs = 1024
    batch_size=128, drop_last=True, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=128)
test_dataloader = val_dataloader

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.04),
    # flat_decay_mult: every 1-D parameter (norms and biases), as the official optimizer.
    paramwise_cfg=dict(**_base_.lightvit_no_decay, bias_decay_mult=0., flat_decay_mult=0.))

param_scheduler = [
    dict(type='LinearLR', start_factor=1e-4, by_epoch=True, begin=0, end=20),
    dict(type='CosineAnnealingLR', eta_min=1e-6, by_epoch=True, begin=20, end=300,
         convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)
auto_scale_lr = dict(base_batch_size=1024)

default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=10,
                    save_best='accuracy/top1', rule='greater'))
randomness = dict(seed=42, diff_rank_seed=True)

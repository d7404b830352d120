# LightViT-T, ImageNet-1k 224x224, 8 GPUs x 128 images, 300 epochs: the official
# recipe (github.com/hunto/image_classification_sota,
# configs/strategies/lightvit/config.yaml), expressed with mmpretrain's
# Swin/DeiT bases.
# - Optimizer: AdamW lr 1e-3 (batch 1024), weight decay 0.04, eps 1e-8; no decay
#   on 1-D parameters (norms, biases: the official optimizer skips every 1-D
#   parameter), global_token and relative_position_bias_table. No gradient
#   clipping (the official default).
# - Schedule: linear warm-up over 20 epochs from 1e-7 (start_factor 1e-4),
#   stepped once per epoch as the official GradualWarmupScheduler does, then
#   cosine to 1e-6, updated every iteration (official decay_by_epoch: false).
# - Data: the inherited imagenet_bs64_swin_224 pipeline: RandomResizedCrop 224
#   (bicubic), flip, RandAugment m9 mstd0.5 (2 ops), RandomErasing p=0.25 with
#   per-pixel normal noise ('rand' mode = timm's 'pixel'), val resize 256 +
#   center crop 224 (bicubic). Two differences from the official code, which
#   mmpretrain cannot express: its RandAugment draws from its own op list
#   (adds Distort, Zoom, Blur, Skew, Invert; non-increasing magnitudes), and
#   mmpretrain's 'timm_increasing' policy is used instead, as in mmpretrain's
#   Swin/DeiT configs. Color jitter 0.3 is set in the official config but its
#   code applies color jitter only when RandAugment is off, so there is none.
# - Batch augments: Mixup(alpha 0.2) or CutMix(alpha 1.0), one of the two on
#   every batch with equal probability (official mixup_prob 1.0, switch 0.5).
# - Loss: the official code mixes label smoothing 0.1 (its default --smoothing)
#   into the mixup/cutmix soft targets and uses soft-target cross-entropy;
#   mmpretrain's LabelSmoothLoss(0.1, mode='original') applied to the mixed
#   targets gives the same targets (as in mmpretrain's Swin configs).
# - Model: drop-path 0.1; LightViTClsNeck + LinearClsHead is the official
#   classifier (norm, neck, head), with its truncated-normal init.
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/schedules/imagenet_bs1024_adamw_swin.py',
    'mmpretrain::_base_/default_runtime.py',
    '../_base_/lightvit_no_decay.yml',
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

train_dataloader = dict(batch_size=128)  # x 8 GPUs = 1024
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

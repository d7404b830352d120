# The CPU demo: Mask R-CNN + LightViT-T trained from scratch on the digits
# canvases (tools/demo/build_digits.py). Data, resolution,
# schedule, RoI budget and two backbone settings for training from scratch
# differ from the COCO 1x config.
_base_ = '../mask-rcnn_lightvit-t_lightvit-fpn_1x_coco.py'

data_root = 'data/digits/'
metainfo = dict(classes=tuple(str(i) for i in range(10)))
image_size = (128, 128)
max_iters = 600

model = dict(
    # From scratch (no ImageNet weights on CPU): the stem BatchNorms have no
    # pretrained statistics to keep frozen (norm_eval=True would leave them at
    # mean 0 / variance 1, i.e. not normalising), and 600 iterations underfit,
    # so drop path (0.1 for COCO) only slows training down.
    backbone=dict(init_cfg=None, drop_path_rate=0.0, norm_eval=False),
    roi_head=dict(
        bbox_head=dict(num_classes=10), mask_head=dict(num_classes=10)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=4,
    num_workers=1,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4,
    num_workers=1,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=max_iters)
optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=50, end=max_iters,
         eta_min=1e-5),
]
default_hooks = dict(
    logger=dict(interval=10, log_metric_by_epoch=False),
    checkpoint=dict(by_epoch=False, interval=max_iters))
log_processor = dict(by_epoch=False)

# At most 4 digits per 128x128 canvas: fewer proposals and RoI samples than
# COCO's 1000/512 keep a CPU step short without starving the heads.
model.update(
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=1000, max_per_img=300),
        rcnn=dict(sampler=dict(num=32))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=300)))
randomness = dict(seed=0)
# Resuming (tools/train.py --resume) continues with the random numbers of an
# uninterrupted run: lightvit_mm.engine.hooks.rng_state_hook.RNGStateHook saves and restores them.
custom_hooks = [dict(type='RNGStateHook')]

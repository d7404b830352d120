# LightViT-T classification pretraining on the digits (CPU, minutes): one-digit
# 48x48 canvases in class folders (lightvit_mm.demo_data.digits.build_digits_cls).
# Only data, resolution and schedule differ from the ImageNet config; the
# mixup/cutmix batch augments go with the data (they slow a short run down).
# A short run on 3000 images fits faster with no drop path (lr 2e-3 stalled at chance).
_base_ = '../lightvit-tiny_8xb128_in1k.py'

data_root = 'data/digits_cls/'
max_iters = 1800

model = dict(
    backbone=dict(drop_path_rate=0.0),
    head=dict(num_classes=10, topk=(1, )),
    train_cfg=dict(augments=None))
data_preprocessor = dict(num_classes=10)

train_pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
test_pipeline = train_pipeline
train_dataloader = dict(
    batch_size=32,
    num_workers=1,
    persistent_workers=True,
    drop_last=False,  # the ImageNet recipe drops the last batch; small digits sets need it
    dataset=dict(type='CustomDataset', _delete_=True, data_root=data_root,
                 data_prefix='train', pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=64,
    num_workers=1,
    persistent_workers=True,
    dataset=dict(type='CustomDataset', _delete_=True, data_root=data_root,
                 data_prefix='val', pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator

train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=max_iters // 3)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=50, end=max_iters, eta_min=1e-5),
]
auto_scale_lr = dict(enable=False)
default_hooks = dict(
    logger=dict(interval=20, log_metric_by_epoch=False),
    checkpoint=dict(by_epoch=False, interval=max_iters))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)

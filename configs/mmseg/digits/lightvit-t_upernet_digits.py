# UPerNet + LightViT-T on the digits canvases' semantic maps (background + 10
# digits; lightvit_mm.demo_data.digits.build_digits_coco writes them beside the
# COCO files), trained on CPU. Only data, resolution (128x128, no crops) and
# schedule differ from the ADE20K config, plus BN instead of SyncBN in the
# heads: the demo trains in one process, where BN is what runs anyway
# (mmengine reverts SyncBN to BN in a single process, and tools/train.py does
# in several CPU processes), and mmseg's init_model, used for the pictures,
# keeps the config's norm as it is.
_base_ = '../lightvit-t-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py'

data_root = 'data/digits/'
image_size = (128, 128)
max_iters = 300
norm_cfg = dict(type='BN', requires_grad=True)
metainfo = dict(
    classes=('background', ) + tuple(str(i) for i in range(10)),
    palette=[[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200],
             [245, 130, 48], [145, 30, 180], [70, 240, 240], [240, 50, 230],
             [210, 245, 60], [250, 190, 212]])

model = dict(
    data_preprocessor=dict(size=image_size),
    backbone=dict(init_cfg=None),  # from scratch; see the -digits-pre config
    decode_head=dict(num_classes=11, norm_cfg=norm_cfg),
    auxiliary_head=dict(num_classes=11, norm_cfg=norm_cfg))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
test_pipeline = train_pipeline
dataset = dict(type='BaseSegDataset', _delete_=True, data_root=data_root, metainfo=metainfo,
               img_suffix='.png', seg_map_suffix='.png', reduce_zero_label=False)
train_dataloader = dict(
    batch_size=4,
    num_workers=1,
    dataset=dict(dataset, data_prefix=dict(img_path='train', seg_map_path='seg_maps/train'),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4,
    num_workers=1,
    dataset=dict(dataset, data_prefix=dict(img_path='val', seg_map_path='seg_maps/val'),
                 pipeline=test_pipeline))
test_dataloader = val_dataloader

train_cfg = dict(max_iters=max_iters, val_interval=max_iters // 3)
optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=50, end=max_iters, eta_min=1e-5),
]
default_hooks = dict(logger=dict(interval=10),
                     checkpoint=dict(interval=max_iters))
randomness = dict(seed=0)

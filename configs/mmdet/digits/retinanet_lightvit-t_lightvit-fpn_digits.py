# RetinaNet + LightViT-T on the digits canvases (CPU), to check the deployed
# RetinaNet (tools/deployment/export.py) against PyTorch. Data, schedule and
# the from-scratch backbone settings are the Mask R-CNN digits config's; the
# model is the RetinaNet of retinanet_lightvit-t_lightvit-fpn_1x_coco.py
# (mmdet's RetinaNet head, LightViTFPN as a plain FPN with P6/P7 on the last
# backbone map) with 10 classes. Both are spelled out here because mmengine
# refuses two _base_ files defining `model`.
_base_ = './mask-rcnn_lightvit-t_lightvit-fpn_digits.py'

model = dict(
    _delete_=True,
    type='RetinaNet',
    data_preprocessor=dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_size_divisor=32),
    backbone=dict(type='LightViT', arch='tiny', drop_path_rate=0.0, out_indices=(0, 1, 2),
                  norm_eval=False),
    neck=dict(type='LightViTFPN', in_channels=[64, 128, 256], out_channels=256, num_outs=5,
              num_extra_trans_convs=0, add_extra_convs='on_input'),
    bbox_head=dict(
        type='RetinaHead', num_classes=10, in_channels=256, stacked_convs=4, feat_channels=256,
        anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4,
                              scales_per_octave=3, ratios=[0.5, 1.0, 2.0],
                              strides=[8, 16, 32, 64, 128]),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[.0, .0, .0, .0],
                        target_stds=[1.0, 1.0, 1.0, 1.0]),
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                      loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
    train_cfg=dict(
        assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0,
                      ignore_iof_thr=-1),
        sampler=dict(type='PseudoSampler'), allowed_border=-1, pos_weight=-1, debug=False),
    test_cfg=dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05,
                  nms=dict(type='nms', iou_threshold=0.5), max_per_img=100))
# The Mask R-CNN demo's lr of 1e-3 blows RetinaNet's focal loss up at the end of
# the warm-up (loss_cls 1.1 -> 5.4 by iteration 60) and it does not recover: bbox mAP
# 0.000 after 600 iterations; 2e-4 trains smoothly (0.140 after 600, seed 0).
optim_wrapper = dict(optimizer=dict(lr=2e-4))
val_evaluator = dict(metric='bbox')
test_evaluator = val_evaluator

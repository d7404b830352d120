# mask-rcnn_lightvit-t_lightvit-fpn_digits.py, starting from the digits-pretrained
# LightViT-T (configs/mmpretrain/digits/lightvit-tiny_digits.py), exactly as the COCO
# configs start from the ImageNet weights. Point it at your checkpoint with
# --cfg-options model.backbone.init_cfg.checkpoint=PATH
_base_ = './mask-rcnn_lightvit-t_lightvit-fpn_digits.py'

model = dict(backbone=dict(
    norm_eval=True,  # keep the pretrained stem BN statistics, as for COCO
    init_cfg=dict(
        _delete_=True,  # the base trains from scratch (init_cfg=None)
        type='Pretrained', checkpoint='work_dirs/digits_pipeline/cls/iter_1800.pth',
        prefix='backbone.')))

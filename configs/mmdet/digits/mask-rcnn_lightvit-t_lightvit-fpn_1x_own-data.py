# Mask R-CNN + LightViT-T with the paper's COCO 1x recipe, on your own
# COCO-format data (docs/own_data.md). The "own" data here are the digits
# (python tools/demo/build_digits.py --out data/digits): ten
# categories named '0'..'9', images in train/ and val/, annotation files in
# annotations/. Change what is marked "yours".
_base_ = '../mask-rcnn_lightvit-t_lightvit-fpn_1x_coco.py'

data_root = 'data/digits/'  # yours, or --data-root DIR on the command line
# yours: the category names of your json files, in the order of their
# "categories" list; they become the labels 0..N-1
metainfo = dict(classes=('0', '1', '2', '3', '4', '5', '6', '7', '8', '9'))
num_classes = len(metainfo['classes'])

# Both heads of Mask R-CNN classify: the box head and the mask head.
model = dict(
    roi_head=dict(
        bbox_head=dict(num_classes=num_classes),
        mask_head=dict(num_classes=num_classes)))

train_dataloader = dict(
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train.json',  # yours
        data_prefix=dict(img='train/')))  # yours
val_dataloader = dict(
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_val.json',  # yours
        data_prefix=dict(img='val/')))  # yours
test_dataloader = val_dataloader
# CocoMetric reads the ground truth itself: the same file as val_dataloader.
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

# The backbone starts from the official ImageNet weights (init_cfg, inherited).
# To start from a whole trained detector instead (e.g. a COCO Mask R-CNN of
# this repository), name its checkpoint; heads whose num_classes differ are
# skipped with a warning and trained from scratch:
# load_from = 'work_dirs/mask-rcnn_lightvit-t_lightvit-fpn_1x_coco/epoch_12.pth'

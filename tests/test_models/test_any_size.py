"""Any image size through the full models in predict mode: Mask R-CNN and
RetinaNet (mmdet) and UPerNet (mmseg) with LightViT-T, randomly initialised.

Images go through the model's own data preprocessor, as in mmdet/mmseg's
test loops (after the pipeline's resizing, which is skipped here):

- mmdet's ``DetDataPreprocessor`` pads every batch to its largest image,
  rounded up to a multiple of 32 (``pad_size_divisor=32``), so the backbone
  never sees less than 32x32 and every size down to 1x1 works; boxes are
  clipped to, and masks pasted at, each image's own size.
- mmseg's ``SegDataPreProcessor`` does not pad in test mode (the ADE20K
  config's ``size=(512, 512)`` is for training), so the backbone sees the
  image as it is: the smallest size is LightViT's 8x8 (the stem's stride),
  below which LightViT's ValueError says so. With
  ``data_preprocessor.test_cfg=dict(size_divisor=32)`` every size down to 1x1
  works. mmseg refuses batches of mixed sizes in test mode, padding or not
  ("The image size in a batch should be the same."); its test loops use
  batch 1.

Note (not asserted): padding changes LightViT's features everywhere, not
only near the border, because the global tokens aggregate all tokens,
padding included; so an image predicted in a padded batch gets (slightly)
other results than alone. The official detection code behaves the same.
"""
import math
import os.path as osp

import pytest
import torch
from conftest import REPO, build_model
from mmengine.config import Config
from mmengine.registry import DefaultScope

import lightvit_mm  # noqa: F401

MASK_RCNN = 'configs/mmdet/mask-rcnn_lightvit-t_lightvit-fpn_1x_coco.py'
RETINANET = 'configs/mmdet/retinanet_lightvit-t_lightvit-fpn_1x_coco.py'
UPERNET = 'configs/mmseg/lightvit-t-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py'
SIZES = [(97, 131), (131, 97), (33, 47), (8, 8)]  # non-square, odd, the 8x8 minimum
TINY = [(7, 9), (1, 1)]  # below LightViT's minimum: only with padding


def build(config, **test_cfg):
    """The config's model with random weights, in eval mode; ``test_cfg``
    entries override ``model.test_cfg`` (e.g. a score threshold of 0, so that
    untrained detectors return boxes)."""
    path = osp.join(REPO, config)
    if not osp.exists(path):
        pytest.skip(f'{config} does not exist (yet)')
    cfg = Config.fromfile(path)
    cfg.model.backbone.init_cfg = None
    for key, value in test_cfg.items():
        node = cfg.model.test_cfg
        *parents, leaf = key.split('.')
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    torch.manual_seed(0)
    model = build_model(cfg)
    model.init_weights()
    model.default_scope = cfg.default_scope
    return model.eval()


def images(sizes):
    generator = torch.Generator().manual_seed(0)
    return [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=generator)
            for h, w in sizes]


def meta(h, w):
    return dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w), scale_factor=(1., 1.))


def predict(model, data):
    with torch.no_grad(), DefaultScope.overwrite_default_scope(model.default_scope):
        data = model.data_preprocessor(data, False)
        return data['inputs'], model(**data, mode='predict')


# --- mmdet --------------------------------------------------------------------------
@pytest.fixture(scope='module')
def mask_rcnn():
    # fewer proposals and detections than COCO's 1000/100: a shorter CPU test
    return build(MASK_RCNN, **{'rcnn.score_thr': 0.0, 'rcnn.max_per_img': 10,
                               'rpn.max_per_img': 100})


@pytest.fixture(scope='module')
def retinanet():
    return build(RETINANET, score_thr=0.0, max_per_img=10)


def detect(model, sizes):
    from mmdet.structures import DetDataSample
    data = dict(inputs=images(sizes),
                data_samples=[DetDataSample(metainfo=meta(h, w)) for h, w in sizes])
    return predict(model, data)


def check_detections(inputs, results, sizes, with_masks):
    pad = (math.ceil(max(h for h, _ in sizes) / 32) * 32,
           math.ceil(max(w for _, w in sizes) / 32) * 32)
    assert tuple(inputs.shape) == (len(sizes), 3, *pad)
    assert len(results) == len(sizes)
    for result, (h, w) in zip(results, sizes):
        assert result.metainfo['batch_input_shape'] == pad
        assert tuple(result.ori_shape) == (h, w)
        pred = result.pred_instances
        n = len(pred)
        assert n > 0 and pred.bboxes.shape == (n, 4) and pred.scores.shape == (n, )
        assert torch.isfinite(pred.bboxes).all() and torch.isfinite(pred.scores).all()
        # boxes are in the original image, clipped to it
        assert (pred.bboxes[:, 0::2] >= 0).all() and (pred.bboxes[:, 0::2] <= w).all()
        assert (pred.bboxes[:, 1::2] >= 0).all() and (pred.bboxes[:, 1::2] <= h).all()
        assert ((pred.labels >= 0) & (pred.labels < 80)).all()
        if with_masks:
            assert pred.masks.shape == (n, h, w) and pred.masks.dtype == torch.bool


@pytest.mark.parametrize('size', SIZES + TINY, ids=lambda s: f'{s[0]}x{s[1]}')
def test_mask_rcnn_any_size(mask_rcnn, size):
    check_detections(*detect(mask_rcnn, [size]), [size], with_masks=True)


@pytest.mark.parametrize('size', SIZES + TINY, ids=lambda s: f'{s[0]}x{s[1]}')
def test_retinanet_any_size(retinanet, size):
    check_detections(*detect(retinanet, [size]), [size], with_masks=False)


@pytest.mark.parametrize('name', ['mask_rcnn', 'retinanet'])
def test_detector_mixed_size_batch(name, request):
    model = request.getfixturevalue(name)
    sizes = SIZES + TINY  # padded to 160x160 together
    check_detections(*detect(model, sizes), sizes, with_masks=name == 'mask_rcnn')


# --- mmseg --------------------------------------------------------------------------
@pytest.fixture(scope='module')
def upernet():
    return build(UPERNET)


def segment(model, sizes):
    from mmseg.structures import SegDataSample
    data = dict(inputs=images(sizes),
                data_samples=[SegDataSample(metainfo=meta(h, w)) for h, w in sizes])
    return predict(model, data)


def check_segmentation(results, sizes):
    assert len(results) == len(sizes)
    for result, (h, w) in zip(results, sizes):
        assert result.seg_logits.data.shape == (150, h, w)
        assert result.pred_sem_seg.data.shape == (1, h, w)
        labels = result.pred_sem_seg.data
        assert ((labels >= 0) & (labels < 150)).all()


@pytest.mark.parametrize('size', SIZES, ids=lambda s: f'{s[0]}x{s[1]}')
def test_upernet_any_size(upernet, size):
    inputs, results = segment(upernet, [size])
    assert tuple(inputs.shape) == (1, 3, *size)  # no test-time padding
    check_segmentation(results, [size])


def test_upernet_below_8x8_needs_padding(upernet):
    with pytest.raises(ValueError, match=r'at least 8x8 pixels .*got 7x9'):
        segment(upernet, [(7, 9)])
    upernet.data_preprocessor.test_cfg = dict(size_divisor=32)
    try:
        for size in TINY:
            inputs, results = segment(upernet, [size])
            assert tuple(inputs.shape) == (1, 3, 32, 32)
            check_segmentation(results, [size])
    finally:
        upernet.data_preprocessor.test_cfg = None


def test_upernet_same_size_batch_and_mmseg_refuses_mixed_sizes(upernet):
    sizes = [(33, 47)] * 3
    inputs, results = segment(upernet, sizes)
    assert tuple(inputs.shape) == (3, 3, 33, 47)
    check_segmentation(results, sizes)
    with pytest.raises(AssertionError, match='The image size in a batch should be the same'):
        segment(upernet, SIZES)

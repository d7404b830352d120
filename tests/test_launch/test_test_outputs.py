"""``tools/test.py --out / --show-dir / --tta`` on the digits detection,
segmentation and classification configs, through each package's own metrics,
visualization hooks and test-time-augmentation models
(``lightvit_mm.launch.test_outputs``)."""
import glob
import os
import os.path as osp

import mmengine
import numpy as np
import pytest
from conftest import CLS_DIGITS_CONFIG, DIGITS_CONFIG, SEG_DIGITS_CONFIG, eval_options, load_tool
from mmengine.config import Config
from PIL import Image

from lightvit_mm.launch.test_outputs import draw_predictions, dump_predictions, enable_tta

#: the val images of the tiny digits sets (tests/conftest.py)
NUM_VAL = 2


def run_test(trained, config, work_dir, *flags, options=()):
    """``tools/test.py CONFIG CHECKPOINT FLAGS --cfg-options ...`` in this
    process, on the tiny val split: the metrics."""
    root = trained['cls_root'] if config == CLS_DIGITS_CONFIG else trained['det_root']
    return load_tool('tools/test.py').main(
        [config, trained['checkpoints'][config], '--work-dir', str(work_dir), *flags,
         '--cfg-options', *eval_options(config, root), *options])


@pytest.fixture
def tta_views(monkeypatch):
    """How many augmented views each TTA model merged, per image (spied on
    the package's own ``merge_preds``)."""
    from mmdet.models.test_time_augs import DetTTAModel
    from mmpretrain.models import AverageClsScoreTTA
    from mmseg.models import SegTTAModel
    views = []
    for cls in (DetTTAModel, SegTTAModel, AverageClsScoreTTA):
        def spy(self, data_samples_list, _merge=cls.merge_preds):
            views.extend(len(samples) for samples in data_samples_list)
            return _merge(self, data_samples_list)
        monkeypatch.setattr(cls, 'merge_preds', spy)
    return views


def drawn_images(folder):
    return sorted(glob.glob(osp.join(folder, '**', '*.png'), recursive=True))


def test_mmdet_out_and_show_dir(digits_checkpoints, tmp_path):
    out, show = tmp_path / 'results.pkl', tmp_path / 'vis'
    metrics = run_test(digits_checkpoints, DIGITS_CONFIG, tmp_path / 'work',
                       '--out', str(out), '--show-dir', str(show))
    assert 'coco/bbox_mAP' in metrics and 'coco/segm_mAP' in metrics
    results = mmengine.load(str(out))  # DumpDetResults: one dict per image
    assert len(results) == NUM_VAL
    for result in results:
        pred = result['pred_instances']
        assert pred['bboxes'].shape[1] == 4
        assert len(pred['scores']) == len(pred['labels']) == len(pred['masks'])
        assert all('counts' in rle for rle in pred['masks'])  # RLE-encoded masks
    val_images = sorted(os.listdir(osp.join(digits_checkpoints['det_root'], 'val')))
    assert sorted(os.listdir(show)) == val_images  # DetVisualizationHook, every image


def test_mmdet_tta_boxes(digits_checkpoints, tmp_path, tta_views):
    """DetTTAModel (image + flip) on the digits detector without its mask
    head (mmdet 3.3 merges boxes only)."""
    metrics = run_test(digits_checkpoints, DIGITS_CONFIG, tmp_path, '--tta', options=[
        'model.roi_head.mask_head=None', 'model.roi_head.mask_roi_extractor=None',
        'test_evaluator.metric=bbox'])
    assert 'coco/bbox_mAP' in metrics
    assert tta_views == [2] * NUM_VAL


def test_mmdet_tta_refuses_mask_rcnn():
    cfg = Config.fromfile(DIGITS_CONFIG)
    with pytest.raises(ValueError, match='merges boxes only.*mask head'):
        enable_tta(cfg)


def test_mmseg_out_show_dir_and_tta(digits_checkpoints, tmp_path, tta_views):
    out, show = tmp_path / 'maps', tmp_path / 'vis'
    # SegVisualizationHook reads runner.iter, which builds the train dataloader.
    train_root = f'train_dataloader.dataset.data_root={digits_checkpoints["det_root"]}/'
    metrics = run_test(digits_checkpoints, SEG_DIGITS_CONFIG, tmp_path / 'work',
                       '--out', str(out), '--show-dir', str(show), '--tta', options=[train_root])
    assert 'mIoU' in metrics
    # SegTTAModel over the config's tta_pipeline: 6 scales x (flip, no flip).
    assert tta_views == [12] * NUM_VAL
    maps = sorted(os.listdir(out))  # IoUMetric output_dir: one label map per image
    assert maps == sorted(os.listdir(osp.join(digits_checkpoints['det_root'], 'val')))
    for name in maps:
        label_map = np.asarray(Image.open(out / name))
        assert label_map.shape == (64, 64) and label_map.max() <= 10  # 11 classes
    assert len(drawn_images(show / 'vis_data' / 'vis_image')) == NUM_VAL


def test_mmpretrain_out_and_show_dir(digits_checkpoints, tmp_path):
    out, show = tmp_path / 'results.pkl', tmp_path / 'vis'
    metrics = run_test(digits_checkpoints, CLS_DIGITS_CONFIG, tmp_path / 'work',
                       '--out', str(out), '--show-dir', str(show))
    assert 'accuracy/top1' in metrics
    results = mmengine.load(str(out))  # DumpResults
    assert len(results) == NUM_VAL
    for result in results:
        assert result['pred_score'].shape == (10, ) and 0 <= int(result['pred_label']) < 10
    assert len(drawn_images(show)) == NUM_VAL  # VisualizationHook, every image


def test_mmpretrain_tta(digits_checkpoints, tmp_path, tta_views):
    out = tmp_path / 'results.pkl'
    metrics = run_test(digits_checkpoints, CLS_DIGITS_CONFIG, tmp_path, '--tta', '--out', str(out))
    assert 'accuracy/top1' in metrics
    assert tta_views == [2] * NUM_VAL  # AverageClsScoreTTA: image + flip
    assert len(mmengine.load(str(out))) == NUM_VAL
    # mmpretrain's VisualizationHook cannot draw a TTA batch: refused up front.
    cfg = Config.fromfile(CLS_DIGITS_CONFIG)
    draw_predictions(cfg, str(tmp_path / 'vis'))
    with pytest.raises(ValueError, match='cannot draw test-time-augmented batches'):
        enable_tta(cfg)


@pytest.mark.parametrize('config,out,match', [
    (DIGITS_CONFIG, 'results.json', r'pickle file \(\.pkl'),
    (CLS_DIGITS_CONFIG, 'results', r'pickle file \(\.pkl'),
])
def test_out_refuses_non_pickle_names(config, out, match):
    with pytest.raises(ValueError, match=match):
        dump_predictions(Config.fromfile(config), out)

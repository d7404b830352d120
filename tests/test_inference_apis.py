# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""Checkpoints written by our training runs open in the stock OpenMMLab
inference APIs and test tools, with torch's safe loading on, and
``publish_model`` writes files that need no allow-list at all."""
import glob
import hashlib
import os
import os.path as osp
import subprocess
import sys

import pytest
from conftest import CLS_DIGITS_CONFIG, DIGITS_CONFIG, REPO, SEG_DIGITS_CONFIG, eval_options


@pytest.fixture(scope='module')
def trained(digits_checkpoints):
    return digits_checkpoints


def globals_beyond_torch(path):
    """The globals a checkpoint names beyond torch's own allow-list, listed
    in a process where lightvit_mm has not extended that list."""
    code = ('import sys, torch; '
            'print("\\n".join(torch.serialization.get_unsafe_globals_in_checkpoint(sys.argv[1])))')
    out = subprocess.run([sys.executable, '-c', code, path], check=True, capture_output=True,
                         text=True, env=dict(os.environ, LIGHTVIT_MM_SAFE_GLOBALS='0'))
    return set(out.stdout.split())


def test_training_checkpoint_needs_only_checked_globals(trained):
    """What a Runner checkpoint asks for beyond torch's defaults is exactly
    what lightvit_mm maps to checked stand-ins."""
    from lightvit_mm.utils.safe_unpickling import safe_globals
    named = {e[1] for e in safe_globals() if isinstance(e, tuple)}
    for path in trained['checkpoints'].values():
        wanted = globals_beyond_torch(path)
        assert 'builtins.getattr' in wanted  # HistoryBuffer.min & co. (protocol 2)
        extra = {g for g in wanted if g not in named and not g.startswith('numpy.dtypes.')}
        assert not extra, (path, extra)


def test_det_inferencer_draws_predictions(trained, tmp_path):
    from mmdet.apis import DetInferencer
    inferencer = DetInferencer(model=DIGITS_CONFIG,
                               weights=trained['checkpoints'][DIGITS_CONFIG], device='cpu')
    result = inferencer(trained['det_image'], out_dir=str(tmp_path), no_save_pred=False)
    assert len(result['predictions']) == 1
    drawn = tmp_path / 'vis' / osp.basename(trained['det_image'])
    assert drawn.stat().st_size > 0


def test_init_detector(trained):
    from mmdet.apis import inference_detector, init_detector
    model = init_detector(DIGITS_CONFIG, trained['checkpoints'][DIGITS_CONFIG], device='cpu')
    assert model.dataset_meta['classes'][:2] == ('0', '1')
    assert inference_detector(model, trained['det_image']).pred_instances is not None


def test_mmseg_inferencer_and_init_model(trained, tmp_path):
    from mmseg.apis import MMSegInferencer, inference_model, init_model
    checkpoint = trained['checkpoints'][SEG_DIGITS_CONFIG]
    inferencer = MMSegInferencer(model=SEG_DIGITS_CONFIG, weights=checkpoint, device='cpu')
    inferencer(trained['det_image'], out_dir=str(tmp_path))
    assert (tmp_path / 'vis' / osp.basename(trained['det_image'])).stat().st_size > 0
    model = init_model(SEG_DIGITS_CONFIG, checkpoint, device='cpu')
    assert inference_model(model, trained['det_image']).pred_sem_seg.data.shape[0] == 1


def test_mmpretrain_inferencer_and_get_model(trained):
    from mmpretrain.apis import ImageClassificationInferencer, get_model
    checkpoint = trained['checkpoints'][CLS_DIGITS_CONFIG]
    image = sorted(glob.glob(osp.join(trained['cls_root'], 'val', '*', '*.png')))[0]
    result = ImageClassificationInferencer(model=CLS_DIGITS_CONFIG, pretrained=checkpoint,
                                           device='cpu')(image)[0]
    assert 0 <= result['pred_label'] < 10
    model = get_model(CLS_DIGITS_CONFIG, pretrained=checkpoint, device='cpu')
    assert model.head.fc.out_features == 10


@pytest.mark.parametrize('package,config', [('mmdet', DIGITS_CONFIG), ('mmseg', SEG_DIGITS_CONFIG),
                                            ('mmpretrain', CLS_DIGITS_CONFIG)])
def test_stock_test_tool(package, config, trained, tmp_path):
    """mmdet/mmseg/mmpretrain's own tools/test.py (shipped in their .mim
    folder) evaluate our checkpoint with our config."""
    module = __import__(package)
    script = osp.join(osp.dirname(module.__file__), '.mim', 'tools', 'test.py')
    root = trained['cls_root'] if config == CLS_DIGITS_CONFIG else trained['det_root']
    out = subprocess.run(
        [sys.executable, script, config, trained['checkpoints'][config], '--work-dir',
         str(tmp_path), '--cfg-options', *eval_options(config, root)],
        cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    metric = {'mmdet': 'coco/bbox_mAP', 'mmseg': 'mIoU', 'mmpretrain': 'accuracy/top1'}[package]
    assert metric in out.stdout + out.stderr


def test_publish_model(trained, tmp_path):
    from mmdet.apis import init_detector
    source = trained['checkpoints'][DIGITS_CONFIG]
    tool = [sys.executable, osp.join(REPO, 'tools/model_converters/publish_model.py'),
            source, str(tmp_path / 'mask-rcnn_digits.pth')]
    subprocess.run(tool, check=True, cwd=REPO)
    (published, ) = [p for p in os.listdir(tmp_path) if p.startswith('mask-rcnn_digits-')]
    path = tmp_path / published
    assert published[len('mask-rcnn_digits-'):-len('.pth')] == \
        hashlib.sha256(path.read_bytes()).hexdigest()[:8]
    # Plain torch.load(weights_only=True), in a process without lightvit_mm.
    code = ('import sys, torch; c = torch.load(sys.argv[1], weights_only=True); '
            'assert sorted(c) == ["meta", "state_dict"], sorted(c); '
            'print(sorted(c["meta"]))')
    env = dict(os.environ, LIGHTVIT_MM_SAFE_GLOBALS='0')
    out = subprocess.run([sys.executable, '-c', code, str(path)], check=True, env=env,
                         capture_output=True, text=True)
    assert 'dataset_meta' in out.stdout and 'cfg' in out.stdout
    assert globals_beyond_torch(str(path)) == set()
    model = init_detector(DIGITS_CONFIG, str(path), device='cpu')
    assert model.dataset_meta['classes'][0] == '0'
    # The same content again: the file exists, nothing is overwritten.
    again = subprocess.run(tool, cwd=REPO, capture_output=True, text=True)
    assert again.returncode != 0 and 'never overwrites' in again.stderr
    assert sorted(os.listdir(tmp_path)) == [published]

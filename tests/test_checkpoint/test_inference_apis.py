# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""Checkpoints written by our training runs open in the stock OpenMMLab
inference APIs and test tools, with torch's safe loading on, and
``publish_model`` writes files that need no allow-list at all."""
import contextlib
import glob
import hashlib
import json
import os
import os.path as osp
import runpy
import sys

import pytest
import torch
from conftest import CLS_DIGITS_CONFIG, DIGITS_CONFIG, SEG_DIGITS_CONFIG, eval_options, load_tool

from lightvit_mm.checkpoint.io import safe_mmengine_checkpoints


@pytest.fixture(scope='module')
def trained(digits_checkpoints):
    """The session's digits checkpoints (conftest.digits_checkpoints)."""
    return digits_checkpoints


def assert_checkpoint_weights(model, path):
    """Every tensor of ``model``'s state dict is the checkpoint's (a
    checkpoint that silently failed to load leaves the random init)."""
    with safe_mmengine_checkpoints():
        saved = torch.load(path, map_location='cpu', weights_only=True)['state_dict']
    state = model.state_dict()
    assert state.keys() == saved.keys(), sorted(set(state) ^ set(saved))[:10]
    differ = [k for k in saved if not torch.equal(state[k].cpu(), saved[k])]
    assert not differ, differ[:10]


@contextlib.contextmanager
def torch_allow_list_only():
    """Within it, weights-only loading knows torch's own allow-list only, as
    in a process without lightvit_mm (the user allow-list, where ``import
    lightvit_mm`` adds its stand-ins, reads as empty)."""
    from torch import _weights_only_unpickler
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_weights_only_unpickler, '_get_user_allowed_globals', lambda: {})
        yield


def globals_beyond_torch(path):
    """The globals a checkpoint names beyond torch's own allow-list."""
    with torch_allow_list_only():
        return set(torch.serialization.get_unsafe_globals_in_checkpoint(path))


def test_training_checkpoint_needs_only_checked_globals(trained):
    """What a Runner checkpoint asks for beyond torch's defaults is exactly
    what lightvit_mm maps to checked stand-ins."""
    from lightvit_mm.checkpoint.safe_unpickling import safe_globals
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
    assert_checkpoint_weights(inferencer.model, trained['checkpoints'][DIGITS_CONFIG])
    result = inferencer(trained['det_image'], out_dir=str(tmp_path), no_save_pred=False)
    assert len(result['predictions']) == 1
    drawn = tmp_path / 'vis' / osp.basename(trained['det_image'])
    assert drawn.stat().st_size > 0


def test_init_detector(trained):
    from mmdet.apis import inference_detector, init_detector
    model = init_detector(DIGITS_CONFIG, trained['checkpoints'][DIGITS_CONFIG], device='cpu')
    assert_checkpoint_weights(model, trained['checkpoints'][DIGITS_CONFIG])
    assert model.dataset_meta['classes'][:2] == ('0', '1')
    assert inference_detector(model, trained['det_image']).pred_instances is not None


def test_mmseg_inferencer_and_init_model(trained, tmp_path):
    from mmseg.apis import MMSegInferencer, inference_model, init_model
    checkpoint = trained['checkpoints'][SEG_DIGITS_CONFIG]
    inferencer = MMSegInferencer(model=SEG_DIGITS_CONFIG, weights=checkpoint, device='cpu')
    assert_checkpoint_weights(inferencer.model, checkpoint)
    inferencer(trained['det_image'], out_dir=str(tmp_path))
    assert (tmp_path / 'vis' / osp.basename(trained['det_image'])).stat().st_size > 0
    model = init_model(SEG_DIGITS_CONFIG, checkpoint, device='cpu')
    assert_checkpoint_weights(model, checkpoint)
    assert inference_model(model, trained['det_image']).pred_sem_seg.data.shape[0] == 1


def test_mmpretrain_inferencer_and_get_model(trained):
    from mmpretrain.apis import ImageClassificationInferencer, get_model
    checkpoint = trained['checkpoints'][CLS_DIGITS_CONFIG]
    image = sorted(glob.glob(osp.join(trained['cls_root'], 'val', '*', '*.png')))[0]
    inferencer = ImageClassificationInferencer(model=CLS_DIGITS_CONFIG, pretrained=checkpoint,
                                               device='cpu')
    assert_checkpoint_weights(inferencer.model, checkpoint)
    assert 0 <= inferencer(image)[0]['pred_label'] < 10
    model = get_model(CLS_DIGITS_CONFIG, pretrained=checkpoint, device='cpu')
    assert_checkpoint_weights(model, checkpoint)
    assert model.head.fc.out_features == 10


@pytest.mark.parametrize('package,config', [('mmdet', DIGITS_CONFIG), ('mmseg', SEG_DIGITS_CONFIG),
                                            ('mmpretrain', CLS_DIGITS_CONFIG)])
def test_stock_test_tool(package, config, trained, tmp_path):
    """mmdet/mmseg/mmpretrain's own tools/test.py (shipped in their .mim
    folder), run in this process as ``python tools/test.py``, evaluate our
    checkpoint with our config and log the evaluator's metric."""
    module = __import__(package)
    script = osp.join(osp.dirname(module.__file__), '.mim', 'tools', 'test.py')
    root = trained['cls_root'] if config == CLS_DIGITS_CONFIG else trained['det_root']
    argv = [script, config, trained['checkpoints'][config], '--work-dir', str(tmp_path),
            '--cfg-options', *eval_options(config, root)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, 'argv', argv)
        runpy.run_path(script, run_name='__main__')
    (log, ) = glob.glob(osp.join(str(tmp_path), '*', '*.json'))
    with open(log) as f:
        metrics = json.loads(f.read().strip().splitlines()[-1])
    metric = {'mmdet': 'coco/bbox_mAP', 'mmseg': 'mIoU', 'mmpretrain': 'accuracy/top1'}[package]
    assert 0 <= metrics[metric] <= 100, metrics


def test_publish_model(trained, tmp_path):
    from mmdet.apis import init_detector
    source = trained['checkpoints'][DIGITS_CONFIG]
    tool = load_tool('tools/model_converters/publish_model.py')
    tool.main([source, str(tmp_path / 'mask-rcnn_digits.pth')])
    (published, ) = [p for p in os.listdir(tmp_path) if p.startswith('mask-rcnn_digits-')]
    path = tmp_path / published
    assert published[len('mask-rcnn_digits-'):-len('.pth')] == \
        hashlib.sha256(path.read_bytes()).hexdigest()[:8]
    # Plain torch.load(weights_only=True) with torch's own allow-list only.
    assert globals_beyond_torch(str(path)) == set()
    with torch_allow_list_only():
        released = torch.load(path, weights_only=True)
    assert sorted(released) == ['meta', 'state_dict']
    assert {'dataset_meta', 'cfg'} <= set(released['meta'])
    model = init_detector(DIGITS_CONFIG, str(path), device='cpu')
    assert_checkpoint_weights(model, source)
    assert model.dataset_meta['classes'][0] == '0'
    # The same content again: the file exists, nothing is overwritten.
    with pytest.raises(SystemExit, match='never overwrites'):
        tool.main([source, str(tmp_path / 'mask-rcnn_digits.pth')])
    assert sorted(os.listdir(tmp_path)) == [published]

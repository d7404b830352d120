# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""Checkpoints are read weights-only: mmengine checkpoints written by our
training runs open everywhere (our tools and the stock OpenMMLab APIs), and
crafted files that try to run code or alter the process are refused by every
reader, with the refused step named."""
import collections
import json
import os
import os.path as osp
import pickle
import re
import runpy
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import CLS_DIGITS_CONFIG, DIGITS_CONFIG, REPO, SEG_DIGITS_CONFIG, load_tool
from crafted_checkpoints import ATTACKS, write_checkpoint
from mmengine.logging import HistoryBuffer, MessageHub

from lightvit_mm.checkpoint import safe_unpickling
from lightvit_mm.checkpoint.io import load_checkpoint_file


def exception_text(error):
    """The messages of an exception and of the ones it was raised from."""
    texts = []
    while error is not None and len(texts) < 10:
        texts.append(f'{type(error).__name__}: {error}')
        error = error.__cause__ or error.__context__
    return '\n'.join(texts)


# ---------------------------------------------------------------------------
# The allow-list itself
# ---------------------------------------------------------------------------
def test_import_registers_checked_stand_ins_only():
    import lightvit_mm
    assert lightvit_mm.SAFE_GLOBALS_REGISTERED
    allowed = torch.serialization.get_safe_globals()
    named = dict(e[::-1] for e in allowed if isinstance(e, tuple))
    assert named['builtins.getattr'] is safe_unpickling.checked_getattr
    assert named['mmengine.logging.history_buffer.HistoryBuffer'] is \
        safe_unpickling.CheckedHistoryBuffer
    assert named['numpy.ndarray'] is safe_unpickling.CheckedArray
    # The real objects are never on the list.
    for obj in (getattr, HistoryBuffer, np.ndarray, np.dtype):
        assert obj not in allowed
    assert all(cls().kind in 'biufc' for cls in allowed
               if isinstance(cls, type) and issubclass(cls, np.dtype))


def test_opt_out_leaves_torch_allow_list_alone():
    code = ('import torch, lightvit_mm; '
            'assert not lightvit_mm.SAFE_GLOBALS_REGISTERED; '
            'assert not [e for e in torch.serialization.get_safe_globals() '
            'if isinstance(e, tuple) or "lightvit_mm" in getattr(e, "__module__", "")]')
    env = dict(os.environ, LIGHTVIT_MM_SAFE_GLOBALS='0')
    subprocess.run([sys.executable, '-c', code], check=True, env=env, cwd=REPO)


def test_context_manager_keeps_process_wide_registration():
    from lightvit_mm.checkpoint.io import safe_mmengine_checkpoints
    before = torch.serialization.get_safe_globals()
    with safe_mmengine_checkpoints():
        pass
    assert torch.serialization.get_safe_globals() == before


def test_checked_getattr_names_object_and_attribute():
    assert safe_unpickling.checked_getattr(HistoryBuffer, 'mean') is HistoryBuffer.mean
    with pytest.raises(pickle.UnpicklingError, match=r"getattr\(class builtins.object, "
                       r"'__subclasses__'\)"):
        safe_unpickling.checked_getattr(object, '__subclasses__')
    with pytest.raises(pickle.UnpicklingError, match="'mean'"):
        safe_unpickling.checked_getattr(HistoryBuffer, 'mean', None)  # default argument
    with pytest.raises(pickle.UnpicklingError, match="'_statistics_methods'"):
        safe_unpickling.checked_getattr(HistoryBuffer, '_statistics_methods')


def test_message_hub_numpy_and_tensors_round_trip(tmp_path):
    hub = MessageHub.get_instance('lightvit_mm_safe_loading')
    for value in (1.5, 0.5):
        hub.update_scalar('train/loss', value)
    hub.update_info('iter', np.int64(3))
    arrays = dict(f32=np.arange(3, dtype=np.float32), i64=np.arange(4).reshape(2, 2),
                  big_endian=np.arange(2, dtype='>f8'), flag=np.array([True]))
    ckpt = dict(meta=dict(iter=3, message_hub=hub.state_dict(), seed=np.int64(1),
                          lr=np.float64(0.1), **arrays),
                state_dict=collections.OrderedDict(w=torch.ones(2)))
    torch.save(ckpt, tmp_path / 'iter_3.pth')
    loaded = torch.load(tmp_path / 'iter_3.pth')  # torch's default: weights_only=True
    assert torch.equal(loaded['state_dict']['w'], torch.ones(2))
    buffer = loaded['meta']['message_hub']['log_scalars']['train/loss']
    assert type(buffer) is HistoryBuffer
    assert type(buffer._log_history) is np.ndarray
    assert buffer.current() == 0.5 and buffer.mean() == 1.0
    assert loaded['meta']['seed'] == 1 and loaded['meta']['lr'] == 0.1
    for key, array in arrays.items():
        np.testing.assert_array_equal(loaded['meta'][key], array)
        # as numpy's own unpickling gives it (which makes byte order native)
        assert loaded['meta'][key].dtype == pickle.loads(pickle.dumps(array)).dtype


class NotAllowed:
    pass


def test_other_globals_still_refused(tmp_path):
    torch.save({'obj': NotAllowed()}, tmp_path / 'evil.pth')
    with pytest.raises(pickle.UnpicklingError, match='NotAllowed'):
        torch.load(tmp_path / 'evil.pth')


def test_object_arrays_refused(tmp_path):
    torch.save({'a': np.array([None, 1], dtype=object)}, tmp_path / 'objects.pth')
    with pytest.raises(pickle.UnpicklingError, match=r"refused numpy.dtype\('O8'\)"):
        torch.load(tmp_path / 'objects.pth')


# ---------------------------------------------------------------------------
# Crafted files: the attacks are real, and every reader refuses them
# ---------------------------------------------------------------------------
def test_every_crafted_file_does_what_it_claims_with_raw_objects_allowed(tmp_path):
    """Positive controls: with the raw objects the files name allow-listed as
    they are (``getattr``, ``HistoryBuffer``, numpy's ``ndarray``, ``dtype``
    and ``_reconstruct``: what a naive allow-list for mmengine checkpoints adds),
    each attack does what it claims: ``getattr_self`` runs its payload (writes
    a marker file), the others replace module globals, walk every class, get
    a file-writing method, stuff a HistoryBuffer or its class-wide table, or
    build an object-flagged float array. In one fresh process without
    ``lightvit_mm``, whose state the attacks corrupt."""
    tool = osp.join(REPO, 'tests', 'test_checkpoint', 'crafted_checkpoints.py')
    env = dict(os.environ, LIGHTVIT_MM_SAFE_GLOBALS='0')
    run = subprocess.run([sys.executable, tool, str(tmp_path)], capture_output=True, text=True,
                         env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    effects = json.loads(run.stdout.strip().splitlines()[-1])
    assert effects == {
        'getattr_self': 'payload ran: eval wrote the marker file',
        'function_globals': 'torch._utils.torch replaced',
        'subclasses_walk': 'object.__subclasses__() returned',
        'numpy_attribute': 'ndarray.tofile wrote a file',
        'module_dict_setitem': 'mmengine.logging.history_buffer.np replaced',
        'history_buffer_attributes': 'HistoryBuffer got the attribute nn',
        'history_buffer_statistics': "HistoryBuffer's class-wide 'mean' replaced",
        'numpy_object_dtype': 'float array with the object flag (its bytes are pointers)'}
    assert (tmp_path / 'getattr_self.marker').read_text() == 'pwned'


def det_data_options(root):
    roots = [f'{split}_dataloader.dataset.data_root={root}/' for split in ('train', 'val', 'test')]
    return roots + [
        f'val_evaluator.ann_file={root}/annotations/instances_val.json',
        f'test_evaluator.ann_file={root}/annotations/instances_val.json',
        'train_dataloader.num_workers=0', 'val_dataloader.num_workers=0',
        'test_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
        'val_dataloader.persistent_workers=False', 'test_dataloader.persistent_workers=False']


def read_with(reader, path, data_root, work_dir):
    """Open checkpoint ``path`` as the reader named ``reader`` does."""
    if reader == 'mmengine_load_checkpoint':
        from mmengine.runner import CheckpointLoader
        CheckpointLoader.load_checkpoint(path, map_location='cpu')
        return
    if reader == 'load_checkpoint_file':
        load_checkpoint_file(path)
        return
    det_opts = det_data_options(data_root)
    if reader == 'pretrained_init':
        from lightvit_mm.models import LightViT
        LightViT(init_cfg=dict(type='Pretrained', checkpoint=path)).init_weights()
    elif reader == 'converter':
        load_tool('tools/model_converters/lightvit_official_to_mm.py').main(
            [path, str(work_dir / 'out.pth')])
    elif reader == 'publish_model':
        load_tool('tools/model_converters/publish_model.py').main([path, str(work_dir / 'rel.pth')])
    elif reader == 'tools_test':
        load_tool('tools/test.py').main([DIGITS_CONFIG, path, '--work-dir', str(work_dir),
                                         '--cfg-options', *det_opts])
    elif reader == 'tools_train_resume':
        load_tool('tools/train.py').main([DIGITS_CONFIG, '--resume', path, '--work-dir',
                                          str(work_dir), '--cfg-options', *det_opts])
    elif reader == 'visualize_predictions':
        load_tool('tools/demo/visualize_predictions.py').main(
            [DIGITS_CONFIG, path, '--out', str(work_dir / 'v.png'),
             '--img-dir', osp.join(data_root, 'val'), '--num-images', '1'])
    elif reader == 'export_onnx':
        load_tool('tools/deployment/export_onnx.py').main(
            ['tiny', str(work_dir / 'm.onnx'), '--checkpoint', path])
    elif reader == 'DetInferencer':
        from mmdet.apis import DetInferencer
        DetInferencer(model=DIGITS_CONFIG, weights=path, device='cpu')
    elif reader == 'init_detector':
        from mmdet.apis import init_detector
        init_detector(DIGITS_CONFIG, path, device='cpu')
    elif reader == 'MMSegInferencer':
        from mmseg.apis import MMSegInferencer
        MMSegInferencer(model=SEG_DIGITS_CONFIG, weights=path, device='cpu')
    elif reader == 'mmseg_init_model':
        from mmseg.apis import init_model
        init_model(SEG_DIGITS_CONFIG, path, device='cpu')
    elif reader == 'ImageClassificationInferencer':
        from mmpretrain.apis import ImageClassificationInferencer
        ImageClassificationInferencer(model=CLS_DIGITS_CONFIG, pretrained=path, device='cpu')
    elif reader == 'mmpretrain_get_model':
        from mmpretrain.apis import get_model
        get_model(CLS_DIGITS_CONFIG, pretrained=path, device='cpu')
    elif reader == 'mmdet_tools_test':
        import mmdet
        script = osp.join(osp.dirname(mmdet.__file__), '.mim', 'tools', 'test.py')
        argv = [script, DIGITS_CONFIG, path, '--work-dir', str(work_dir),
                '--cfg-options', *det_opts]
        old_argv, sys.argv = sys.argv, argv
        try:
            runpy.run_path(script, run_name='__main__')
        finally:
            sys.argv = old_argv
    else:
        raise KeyError(reader)


READERS = ['pretrained_init', 'converter', 'publish_model', 'tools_test', 'tools_train_resume',
           'visualize_predictions', 'export_onnx', 'DetInferencer', 'init_detector',
           'MMSegInferencer', 'mmseg_init_model', 'ImageClassificationInferencer',
           'mmpretrain_get_model', 'mmdet_tools_test']


def assert_process_unaltered(work_dir):
    """Nothing the attacks aim at was altered by a refused load, and the
    reader left no half-written file in ``work_dir``."""
    from mmengine.logging import history_buffer
    assert torch._utils.torch is torch
    assert history_buffer.np is np
    assert all(method is vars(HistoryBuffer).get(name)
               for name, method in HistoryBuffer._statistics_methods.items())
    assert not np.dtype('f8').hasobject
    assert not any(f.endswith('.tmp') or 'unhashed' in f for f in os.listdir(work_dir))


def refused(reader, attack, data_root, tmp_path):
    """Read the crafted file ``attack`` with ``reader``: refused, with the
    refused step named, no payload run, the process unaltered."""
    builder, refusal = ATTACKS[attack]
    marker = tmp_path / 'pwned'
    path = write_checkpoint(tmp_path / 'lightvit_tiny_78.7.ckpt', builder(marker))
    work_dir = tmp_path / 'work'
    work_dir.mkdir()
    with pytest.raises(BaseException) as info:
        read_with(reader, path, data_root, work_dir)
    assert re.search(refusal, exception_text(info.value)), exception_text(info.value)
    assert not marker.exists()
    assert_process_unaltered(work_dir)


# Every attack through the two code paths that read files: torch.load with the
# process-wide allow-list (under mmengine's load_checkpoint, which every stock
# API and our Runner-based tools call) and lightvit-mm's own load_checkpoint_file
# (the Pretrained init, converters, publish and export tools), which re-raises
# with how to opt in. The refusal happens inside torch's unpickler in both.
@pytest.mark.parametrize('attack', sorted(ATTACKS))
@pytest.mark.parametrize('reader', ['mmengine_load_checkpoint', 'load_checkpoint_file'])
def test_every_crafted_file_refused(reader, attack, tmp_path):
    refused(reader, attack, None, tmp_path)


# The strongest attack (a complete chain to eval) through every reader.
@pytest.mark.parametrize('reader', READERS)
def test_every_reader_refuses_full_chain(reader, tiny_digits, tmp_path):
    refused(reader, 'getattr_self', tiny_digits, tmp_path)


def test_our_reader_says_how_to_opt_in(tmp_path):
    path = write_checkpoint(tmp_path / 'x.pth', ATTACKS['subclasses_walk'][0](tmp_path / 'm'))
    with pytest.raises(RuntimeError, match=r"refused getattr\(a tuple, '__class__'\).*"
                       r'weights_only=False'):
        load_checkpoint_file(path)

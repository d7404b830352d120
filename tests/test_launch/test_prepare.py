"""lightvit_mm.launch.prepare: the order in which tools/train.py and
tools/test.py apply their command line (a later step wins over an earlier
one) and check the machine (what cannot run fails before a missing file)."""
import os
import os.path as osp

import pytest
import torch
from conftest import DIGITS_CONFIG, REPO, load_tool
from mmengine.config import Config

from lightvit_mm.launch.prepare import apply_command_line, prepare

MASK_RCNN = osp.join(REPO, 'configs/mmdet/mask-rcnn_lightvit-t_lightvit-fpn_1x_coco.py')
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason='tests a machine without a GPU')


def train_args(*argv):
    return load_tool('tools/train.py').parse_args([MASK_RCNN, *argv])


def test_train_steps_in_order(tmp_path):
    args = train_args('--data-root', str(tmp_path), '--amp', '--resume', 'ckpt.pth',
                      '--launcher', 'pytorch', '--cfg-options',
                      'val_evaluator.ann_file=/x/val.json', 'optim_wrapper.type=OptimWrapper',
                      'load_from=/y/other.pth', 'launcher=none')
    cfg = apply_command_line(Config.fromfile(MASK_RCNN), args, 'train')
    # --data-root first: datasets and the evaluator it was not overridden on moved
    assert cfg.train_dataloader.dataset.data_root == str(tmp_path)
    assert cfg.test_evaluator.ann_file == osp.join(str(tmp_path),
                                                   'annotations/instances_val2017.json')
    # --cfg-options next: they win over --data-root and over --launcher
    assert cfg.val_evaluator.ann_file == '/x/val.json'
    assert cfg.launcher == 'none'
    # the tool's flags last: --amp and --resume win over --cfg-options
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper' and cfg.optim_wrapper.loss_scale == 'dynamic'
    assert cfg.resume is True and cfg.load_from == 'ckpt.pth'
    assert cfg.work_dir == './work_dirs/mask-rcnn_lightvit-t_lightvit-fpn_1x_coco'


def test_test_steps_in_order(tmp_path):
    test = load_tool('tools/test.py')
    args = test.parse_args([DIGITS_CONFIG, 'epoch_1.pth', '--work-dir', str(tmp_path),
                            '--out', 'preds.pkl', '--cfg-options', 'load_from=other.pth',
                            f'work_dir={tmp_path}/ignored'])
    cfg = apply_command_line(Config.fromfile(DIGITS_CONFIG), args, 'test')
    assert cfg.load_from == 'epoch_1.pth'  # the checkpoint wins over --cfg-options
    assert cfg.work_dir == str(tmp_path)  # so does --work-dir
    assert [m.type for m in cfg.test_evaluator] == ['CocoMetric', 'DumpDetResults']
    assert cfg.launcher == 'none'
    with pytest.raises(ValueError, match="run must be one of \\['train', 'test'\\], got 'val'"):
        apply_command_line(Config.fromfile(DIGITS_CONFIG), args, 'val')


@no_gpu
def test_checks_the_machine_before_the_files(tmp_path, monkeypatch):
    monkeypatch.setenv('LOCAL_RANK', '0')
    monkeypatch.delenv('LOCAL_RANK')  # restored when the test ends
    test = load_tool('tools/test.py')
    missing = str(tmp_path / 'none')
    args = test.parse_args([DIGITS_CONFIG, 'epoch_1.pth', '--data-root', missing,
                            '--launcher', 'slurm', '--local-rank', '3'])
    with pytest.raises(RuntimeError, match='--launcher slurm needs a GPU'):
        prepare(Config.fromfile(DIGITS_CONFIG), args, 'test')
    assert os.environ['LOCAL_RANK'] == '3'
    args.launcher = 'none'
    with pytest.raises(FileNotFoundError, match=f'{missing}/annotations/instances_val.json'):
        prepare(Config.fromfile(DIGITS_CONFIG), args, 'test')


def test_prepared_config_is_ready(tiny_digits, tmp_path):
    train = load_tool('tools/train.py')
    args = train.parse_args([DIGITS_CONFIG, '--data-root', tiny_digits,
                             '--work-dir', str(tmp_path)])
    cfg = prepare(Config.fromfile(DIGITS_CONFIG), args, 'train')
    assert cfg.val_dataloader.dataset.data_root == tiny_digits
    assert cfg.work_dir == str(tmp_path) and cfg.launcher == 'none'
    assert not os.listdir(tmp_path)  # nothing built, nothing written

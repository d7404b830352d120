"""Experiment tracking through mmengine's visualization backends
(``tools/train.py --vis-backend``): a 2-iteration digits run logs its loss,
learning rate and val metric to TensorBoard, read back with TensorBoard's own
reader (the classification config: the cheapest to validate on a CPU)."""
import glob
import importlib.util
import os.path as osp

import pytest
from conftest import CLS_DIGITS_CONFIG, DIGITS_CONFIG, load_tool, read_scalars, tiny_cls_options
from mmengine.config import Config

from lightvit_mm.launch.prepare import apply_command_line
from lightvit_mm.launch.vis_backends import check_vis_backends, set_vis_backends

MAX_ITERS = 2


def tensorboard_scalars(work_dir):
    """{tag: [(step, value), ...]} of the run's TensorBoard event file."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    (events, ) = glob.glob(osp.join(str(work_dir), '*', 'vis_data', 'events.out.tfevents.*'))
    accumulator = EventAccumulator(events)
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)]
            for tag in accumulator.Tags()['scalars']}


def test_tensorboard_gets_loss_and_val_metric(tiny_digits_cls, tmp_path):
    work_dir = tmp_path / 'work'
    load_tool('tools/train.py').main(
        [CLS_DIGITS_CONFIG, '--work-dir', str(work_dir), '--vis-backend', 'local', 'tensorboard',
         '--cfg-options', *tiny_cls_options(tiny_digits_cls, MAX_ITERS, validate=True)])
    scalars = tensorboard_scalars(work_dir)
    local = read_scalars(work_dir)  # the LocalVisBackend beside it: the same numbers
    assert [r['iter'] for r in local] == [1, 2]
    for tag in ('loss', 'lr'):
        assert [step for step, _ in scalars[tag]] == [1, 2], tag
        assert [v for _, v in scalars[tag]] == pytest.approx([r[tag] for r in local], rel=1e-6)
    ((step, top1), ) = scalars['accuracy/top1']  # the val metric, at the last iteration
    assert step == MAX_ITERS and 0 <= top1 <= 100


def test_vis_backend_sets_the_backends_before_cfg_options():
    train = load_tool('tools/train.py')
    args = train.parse_args([DIGITS_CONFIG,
                             '--vis-backend', 'local', 'wandb', '--cfg-options',
                             'visualizer.vis_backends.1.init_kwargs.project=lightvit'])
    cfg = apply_command_line(Config.fromfile(DIGITS_CONFIG), args, 'train')
    assert cfg.visualizer.vis_backends == [
        dict(type='LocalVisBackend'),
        dict(type='WandbVisBackend', init_kwargs=dict(project='lightvit'))]


def test_missing_tracking_package_stops_before_the_run(monkeypatch):
    train = load_tool('tools/train.py')
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec',
                        lambda name: None if name == 'mlflow' else find_spec(name))
    with pytest.raises(ImportError, match='MLflowVisBackend needs the mlflow package.*'
                                          'pip install mlflow'):
        # before the data check: the digits data is not built here
        train.main([DIGITS_CONFIG, '--vis-backend', 'mlflow', '--data-root', '/nonexistent'])
    with pytest.raises(SystemExit):  # argparse: not one of the choices
        train.parse_args(['x.py', '--vis-backend', 'neptune'])
    cfg = Config.fromfile(DIGITS_CONFIG)
    with pytest.raises(KeyError, match="unknown visualization backends \\['neptune'\\]"):
        set_vis_backends(cfg, ['neptune'])
    set_vis_backends(cfg, ['mlflow'])
    with pytest.raises(ImportError, match='pip install mlflow'):
        check_vis_backends(cfg)

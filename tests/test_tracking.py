"""Experiment tracking through mmengine's visualization backends
(``tools/train.py --vis-backend``): a 2-iteration digits run logs its losses
and its val metric to TensorBoard, read back with TensorBoard's own reader."""
import glob
import os.path as osp

import pytest
from conftest import DIGITS_CONFIG, TINY_CANVAS, load_tool, read_scalars, tiny_digits_options

MAX_ITERS = 2


def with_validation(data_root):
    """:func:`tiny_digits_options` plus a val loop at the last iteration on
    the 2 tiny val canvases."""
    return [o for o in tiny_digits_options(data_root, max_iters=MAX_ITERS)
            if not o.startswith('val_')] + [
        f'val_dataloader.dataset.data_root={data_root}/', 'val_dataloader.num_workers=0',
        'val_dataloader.persistent_workers=False', 'val_dataloader.batch_size=2',
        f'val_dataloader.dataset.pipeline.1.scale=({TINY_CANVAS},{TINY_CANVAS})',
        f'val_evaluator.ann_file={data_root}/annotations/instances_val.json',
        'val_evaluator.metric=bbox']


def tensorboard_scalars(work_dir):
    """{tag: [(step, value), ...]} of the run's TensorBoard event file."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    (events, ) = glob.glob(osp.join(str(work_dir), '*', 'vis_data', 'events.out.tfevents.*'))
    accumulator = EventAccumulator(events)
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)]
            for tag in accumulator.Tags()['scalars']}


def test_tensorboard_gets_losses_and_val_metric(tiny_digits, tmp_path):
    work_dir = tmp_path / 'work'
    load_tool('tools/train.py').main(
        [DIGITS_CONFIG,
         '--work-dir', str(work_dir), '--vis-backend', 'local', 'tensorboard',
         '--cfg-options', *with_validation(tiny_digits)])
    scalars = tensorboard_scalars(work_dir)
    local = read_scalars(work_dir)  # the LocalVisBackend beside it: the same numbers
    assert [r['iter'] for r in local] == [1, 2]
    for tag in ('loss', 'loss_rpn_cls', 'loss_cls', 'loss_mask', 'lr'):
        assert [step for step, _ in scalars[tag]] == [1, 2], tag
        assert [v for _, v in scalars[tag]] == pytest.approx([r[tag] for r in local], rel=1e-6)
    ((step, bbox_map), ) = scalars['coco/bbox_mAP']  # the val metric, at the last iteration
    assert step == MAX_ITERS and 0 <= bbox_map <= 1


def test_vis_backend_sets_the_backends_before_cfg_options():
    train = load_tool('tools/train.py')
    args = train.parse_args([DIGITS_CONFIG,
                             '--vis-backend', 'local', 'wandb', '--cfg-options',
                             'visualizer.vis_backends.1.init_kwargs.project=lightvit'])
    cfg = train.build_config(args)
    assert cfg.visualizer.vis_backends == [
        dict(type='LocalVisBackend'),
        dict(type='WandbVisBackend', init_kwargs=dict(project='lightvit'))]


def test_missing_tracking_package_stops_before_the_run(monkeypatch):
    train = load_tool('tools/train.py')
    cfg = train.build_config(train.parse_args(
        [DIGITS_CONFIG,
         '--vis-backend', 'mlflow']))
    find_spec = train.importlib.util.find_spec
    monkeypatch.setattr(train.importlib.util, 'find_spec',
                        lambda name: None if name == 'mlflow' else find_spec(name))
    with pytest.raises(ImportError, match='MLflowVisBackend needs the mlflow package.*'
                                          'pip install mlflow'):
        train.check_vis_backends(cfg)
    with pytest.raises(SystemExit):  # argparse: not one of the choices
        train.parse_args(['x.py', '--vis-backend', 'neptune'])

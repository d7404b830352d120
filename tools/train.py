# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""Train a model from an mmdet, mmseg or mmpretrain config with mmengine's Runner.

The registry scope comes from the config (``default_scope``, set by the
package's base configs), so one script serves all three packages.

Example:
    python tools/train.py configs/mmdet/mask-rcnn_lightvit-t_lightvit-fpn_1x_coco.py
"""
import argparse
import importlib.util
import os
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.runner import Runner

from lightvit_mm.checkpoint.io import safe_mmengine_checkpoints
from lightvit_mm.launch.amp import check_amp
from lightvit_mm.launch.data_root import DATA_ROOT_HELP, check_data_files, set_data_root
from lightvit_mm.launch.distributed import setup_distributed

#: --vis-backend name -> (mmengine visualization backend, the package it imports)
VIS_BACKENDS = {
    'local': ('LocalVisBackend', None),
    'tensorboard': ('TensorboardVisBackend', 'tensorboard'),
    'wandb': ('WandbVisBackend', 'wandb'),
    'mlflow': ('MLflowVisBackend', 'mlflow'),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a model from a config')
    parser.add_argument('config', help='config file path')
    parser.add_argument('--work-dir', help='where logs and checkpoints go '
                        '(default: ./work_dirs/<config name>)')
    parser.add_argument('--amp', action='store_true',
                        help='automatic mixed precision (AmpOptimWrapper)')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the learning rate by the actual batch size '
                        '(needs auto_scale_lr in the config)')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from this checkpoint, or from the latest '
                        'one in the work dir when no path is given')
    parser.add_argument('--data-root', help=DATA_ROOT_HELP)
    parser.add_argument('--vis-backend', nargs='+', choices=list(VIS_BACKENDS),
                        help='where losses, learning rates and val metrics are logged '
                        '(mmengine visualization backends, in this order; replaces the '
                        "config's visualizer.vis_backends, which is [local]); tune one with "
                        '--cfg-options visualizer.vis_backends.INDEX.KEY=VALUE')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. '
                        'model.backbone.init_cfg.checkpoint=PATH')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def build_config(args) -> Config:
    """Load the config and apply the command-line overrides."""
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.data_root:
        set_data_root(cfg, args.data_root)
    if args.vis_backend:  # before --cfg-options, which may tune them
        cfg.visualizer.vis_backends = [dict(type=VIS_BACKENDS[name][0])
                                       for name in args.vis_backend]
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    if args.amp:
        if cfg.optim_wrapper.get('type', 'OptimWrapper') == 'AmpOptimWrapper':
            print('AMP is already enabled in the config.')
        else:
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg or 'base_batch_size' not in cfg.auto_scale_lr:
            raise KeyError('--auto-scale-lr needs auto_scale_lr.base_batch_size '
                           f'in the config {args.config}')
        cfg.auto_scale_lr.enable = True
        # mmengine scales by the images of one iteration (processes x batch);
        # with gradient accumulation an optimizer step sees `counts` times more.
        counts = cfg.optim_wrapper.get('accumulative_counts', 1)
        if counts > 1:
            cfg.auto_scale_lr.base_batch_size /= counts
            print(f'--auto-scale-lr with optim_wrapper.accumulative_counts={counts}: '
                  f'scaling by {counts} x batch x processes / base batch size')
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume
    return cfg


def check_vis_backends(cfg: Config) -> None:
    """Fail before anything is built when a visualization backend of the
    config needs a package that is not installed (mmengine would only say so
    at the first logged scalar)."""
    needs = {backend: package for backend, package in VIS_BACKENDS.values() if package}
    for backend in (cfg.get('visualizer') or {}).get('vis_backends') or []:
        package = needs.get(backend.get('type'))
        if package and importlib.util.find_spec(package) is None:
            raise ImportError(f'{backend["type"]} needs the {package} package, which is not '
                              f'installed: pip install {package}')


def main(argv=None) -> Runner:
    """Train as the command line ``argv`` says; return the Runner after training."""
    args = parse_args(argv)
    cfg = build_config(args)
    check_vis_backends(cfg)
    check_amp(cfg)  # before anything is built
    setup_distributed(cfg)  # gloo when launched without a GPU
    check_data_files(cfg, ('train_dataloader', 'val_dataloader'))
    runner = Runner.from_cfg(cfg)
    with safe_mmengine_checkpoints():  # load_from / resume under torch >= 2.6
        runner.train()
    return runner


if __name__ == '__main__':
    main()

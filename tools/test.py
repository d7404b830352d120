# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""Evaluate a checkpoint on the test split of an mmdet, mmseg or mmpretrain config.

Example:
    python tools/test.py configs/mmdet/mask-rcnn_lightvit-t_lightvit-fpn_1x_coco.py \
        work_dirs/mask-rcnn_lightvit-t_lightvit-fpn_1x_coco/epoch_12.pth
"""
import argparse
import os
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.runner import Runner

from lightvit_mm.engine.data_root import DATA_ROOT_HELP, check_data_files, set_data_root
from lightvit_mm.engine.distributed import setup_distributed
from lightvit_mm.utils.checkpoint import safe_mmengine_checkpoints


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test a checkpoint')
    parser.add_argument('config', help='config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='where logs and metrics go '
                        '(default: ./work_dirs/<config name>)')
    parser.add_argument('--data-root', help=DATA_ROOT_HELP)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def main(argv=None):
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.data_root:
        set_data_root(cfg, args.data_root)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    cfg.load_from = args.checkpoint
    setup_distributed(cfg)  # gloo when launched without a GPU
    check_data_files(cfg, ('test_dataloader', ))
    runner = Runner.from_cfg(cfg)
    with safe_mmengine_checkpoints():  # load_from / resume under torch >= 2.6
        runner.test()


if __name__ == '__main__':
    main()

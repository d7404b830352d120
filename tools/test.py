# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""Evaluate a checkpoint on the test split of an mmdet, mmseg or mmpretrain config;
optionally save the predictions (``--out``), draw them (``--show-dir``) and test
with test-time augmentation (``--tta``), as the packages' own tools/test.py do
(:mod:`lightvit_mm.launch.test_outputs`).

Example:
    python tools/test.py configs/mmdet/mask-rcnn_lightvit-t_lightvit-fpn_1x_coco.py \
        work_dirs/mask-rcnn_lightvit-t_lightvit-fpn_1x_coco/epoch_12.pth \
        --out results.pkl --show-dir vis
"""
import argparse
import os
import os.path as osp

from mmengine.config import DictAction
from mmengine.runner import Runner

from lightvit_mm.checkpoint.io import safe_mmengine_checkpoints
from lightvit_mm.launch.data_root import DATA_ROOT_HELP, check_data_files, load_config
from lightvit_mm.launch.distributed import setup_distributed
from lightvit_mm.launch.test_outputs import draw_predictions, dump_predictions, enable_tta


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test a checkpoint')
    parser.add_argument('config', help='config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='where logs and metrics go '
                        '(default: ./work_dirs/<config name>)')
    parser.add_argument('--data-root', help=DATA_ROOT_HELP)
    parser.add_argument('--out', help='save the predictions: a .pkl file for mmdet '
                        '(DumpDetResults) and mmpretrain (DumpResults) configs, a folder of '
                        'PNG label maps for mmseg configs (IoUMetric output_dir)')
    parser.add_argument('--show-dir', help='draw every test image with its predictions into '
                        "this folder (the package's visualization hook)")
    parser.add_argument('--tta', action='store_true', help="test-time augmentation (the "
                        "config's tta_model/tta_pipeline, else flip; mmdet: boxes only)")
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def main(argv=None) -> dict:
    """Test as the command line ``argv`` says; return the metrics."""
    args = parse_args(argv)
    cfg = load_config(args.config, args.data_root, args.cfg_options)
    cfg.launcher = args.launcher
    if args.work_dir:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    cfg.load_from = args.checkpoint
    if args.out:
        dump_predictions(cfg, args.out)
    if args.show_dir:
        draw_predictions(cfg, args.show_dir)
    if args.tta:
        enable_tta(cfg)
    setup_distributed(cfg)  # gloo when launched without a GPU
    check_data_files(cfg, ('test_dataloader', ))
    runner = Runner.from_cfg(cfg)
    with safe_mmengine_checkpoints():  # load_from / resume under torch >= 2.6
        return runner.test()


if __name__ == '__main__':
    main()

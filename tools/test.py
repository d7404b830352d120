# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""Evaluate a checkpoint on the test split of an mmdet, mmseg or mmpretrain config;
optionally save the predictions (``--out``), draw them (``--show-dir``) and test
with test-time augmentation (``--tta``), as the packages' own tools/test.py do
(:mod:`lightvit_mm.launch.test_outputs`). The command line is applied and
checked by :func:`lightvit_mm.launch.prepare.prepare`.

Example:
    python tools/test.py configs/mmdet/mask-rcnn_lightvit-t_lightvit-fpn_1x_coco.py \
        work_dirs/mask-rcnn_lightvit-t_lightvit-fpn_1x_coco/epoch_12.pth \
        --out results.pkl --show-dir vis
"""
import argparse

from mmengine.config import Config
from mmengine.runner import Runner

from lightvit_mm.checkpoint.io import safe_mmengine_checkpoints
from lightvit_mm.launch.prepare import add_launch_arguments, prepare


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test a checkpoint')
    parser.add_argument('config', help='config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='where logs and metrics go '
                        '(default: ./work_dirs/<config name>)')
    parser.add_argument('--out', help='save the predictions: a .pkl file for mmdet '
                        '(DumpDetResults) and mmpretrain (DumpResults) configs, a folder of '
                        'PNG label maps for mmseg configs (IoUMetric output_dir)')
    parser.add_argument('--show-dir', help='draw every test image with its predictions into '
                        "this folder (the package's visualization hook)")
    parser.add_argument('--tta', action='store_true', help="test-time augmentation (the "
                        "config's tta_model/tta_pipeline, else flip; mmdet: boxes only)")
    add_launch_arguments(parser)
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    """Test as the command line ``argv`` says; return the metrics."""
    args = parse_args(argv)
    cfg = prepare(Config.fromfile(args.config), args, 'test')
    runner = Runner.from_cfg(cfg)
    with safe_mmengine_checkpoints():  # load_from / resume under torch >= 2.6
        return runner.test()


if __name__ == '__main__':
    main()

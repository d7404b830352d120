# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""Train a model from an mmdet, mmseg or mmpretrain config with mmengine's Runner.

The registry scope comes from the config (``default_scope``, set by the
package's base configs), so one script serves all three packages. The
command line is applied and checked by :func:`lightvit_mm.launch.prepare.prepare`.

Example:
    python tools/train.py configs/mmdet/mask-rcnn_lightvit-t_lightvit-fpn_1x_coco.py
"""
import argparse

from mmengine.config import Config
from mmengine.runner import Runner

from lightvit_mm.checkpoint.io import safe_mmengine_checkpoints
from lightvit_mm.launch.prepare import add_launch_arguments, prepare
from lightvit_mm.launch.vis_backends import VIS_BACKENDS


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
    parser.add_argument('--vis-backend', nargs='+', choices=list(VIS_BACKENDS),
                        help='where losses, learning rates and val metrics are logged '
                        '(mmengine visualization backends, in this order; replaces the '
                        "config's visualizer.vis_backends, which is [local]); tune one with "
                        '--cfg-options visualizer.vis_backends.INDEX.KEY=VALUE')
    add_launch_arguments(parser, cfg_options_help='override config entries, e.g. '
                         'model.backbone.init_cfg.checkpoint=PATH')
    return parser.parse_args(argv)


def main(argv=None) -> Runner:
    """Train as the command line ``argv`` says; return the Runner after training."""
    args = parse_args(argv)
    cfg = prepare(Config.fromfile(args.config), args, 'train')
    runner = Runner.from_cfg(cfg)
    with safe_mmengine_checkpoints():  # load_from / resume under torch >= 2.6
        runner.train()
    return runner


if __name__ == '__main__':
    main()

# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""Evaluate a deployed-model folder (tools/deployment/export.py) on the test
split of its config, as tools/test.py does for the PyTorch checkpoint: the
config's test dataloader, test loop and evaluator (CocoMetric, IoUMetric,
Accuracy, ...) in mmengine's Runner, with lightvit_mm.deploy.DeployedModel
as the model.

Example:
    python tools/deployment/test_deployed.py \
        configs/mmdet/digits/mask-rcnn_lightvit-t_lightvit-fpn_digits.py \
        work_dirs/digits_demo/deploy_ort --data-root data/digits/
"""
import argparse
import os.path as osp

from mmengine.config import DictAction
from mmengine.runner import Runner

from lightvit_mm.launch.data_root import DATA_ROOT_HELP, check_data_files, load_config


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Evaluate a deployed model')
    parser.add_argument('config', help='config file path (the one it was exported from)')
    parser.add_argument('deployed', help='the deployed-model folder (export.py --work-dir)')
    parser.add_argument('--work-dir', help='where logs and metrics go (default: '
                        'DEPLOYED/test_deployed)')
    parser.add_argument('--data-root', help=DATA_ROOT_HELP)
    parser.add_argument('--num-threads', type=int, default=0,
                        help='runtime threads (default: the runtime chooses)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries')
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    from lightvit_mm.deploy import DeployedModel
    from lightvit_mm.deploy.graphs import task_of_config
    cfg = load_config(args.config, args.data_root, args.cfg_options)
    check_data_files(cfg, ('test_dataloader', ))
    task = task_of_config(cfg)  # a folder exported for another task is refused
    model = DeployedModel(args.deployed, task=task, num_threads=args.num_threads)
    runner = Runner(
        model=model,
        work_dir=args.work_dir or osp.join(args.deployed, 'test_deployed'),
        test_dataloader=cfg.test_dataloader,
        test_cfg=cfg.get('test_cfg') or dict(type='TestLoop'),
        test_evaluator=cfg.test_evaluator,
        default_hooks=cfg.get('default_hooks'),
        env_cfg=cfg.get('env_cfg', dict(dist_cfg=dict(backend='gloo'))),
        log_processor=cfg.get('log_processor'),
        visualizer=cfg.get('visualizer'),
        default_scope=cfg.get('default_scope', 'mmengine'),
        experiment_name=f'test_deployed_{task}',
        cfg=cfg)
    return runner.test()


if __name__ == '__main__':
    main()

# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""The one preflight of ``tools/train.py`` and ``tools/test.py``: the command
line applied to the config, then the checks that let a run fail before
mmengine's Runner builds datasets and model (:func:`prepare`)."""
import argparse
import os
import os.path as osp

from mmengine.config import Config, DictAction

from .amp import check_amp, enable_amp
from .data_root import DATA_ROOT_HELP, check_data_files, set_data_root
from .distributed import setup_distributed
from .test_outputs import draw_predictions, dump_predictions, enable_tta
from .vis_backends import check_vis_backends, set_vis_backends

#: what a run reads, by tool: the dataloaders whose files must exist
RUN_LOADERS = {'train': ('train_dataloader', 'val_dataloader'),
               'test': ('test_dataloader', )}
#: --launcher choices (mmengine's launchers)
LAUNCHERS = ('none', 'pytorch', 'slurm', 'mpi')


def add_launch_arguments(parser: argparse.ArgumentParser,
                         cfg_options_help: str = 'override config entries') -> None:
    """Add the options both tools take, as mmdet's tools name them:
    ``--data-root``, ``--cfg-options``, ``--launcher`` and ``--local-rank``
    (also ``--local_rank``, what ``torch.distributed.launch`` passes)."""
    parser.add_argument('--data-root', help=DATA_ROOT_HELP)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help=cfg_options_help)
    parser.add_argument('--launcher', choices=LAUNCHERS, default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def apply_command_line(cfg: Config, args: argparse.Namespace, run: str) -> Config:
    """Steps 1 (but ``LOCAL_RANK``) to 5 of :func:`prepare`: the command line
    ``args`` written into ``cfg`` (in place; also returned); nothing checked,
    no environment variable or process group touched.

    Raises:
        ValueError: ``run`` is neither ``'train'`` nor ``'test'``; and those of
            :func:`~lightvit_mm.launch.data_root.set_data_root` and
            :mod:`~lightvit_mm.launch.test_outputs`.
        KeyError: ``--auto-scale-lr`` with a config that has no
            ``auto_scale_lr.base_batch_size``.
    """
    if run not in RUN_LOADERS:
        raise ValueError(f'run must be one of {list(RUN_LOADERS)}, got {run!r}')
    cfg.launcher = args.launcher
    if args.data_root:
        set_data_root(cfg, args.data_root)
    if run == 'train' and args.vis_backend:  # before --cfg-options, which may tune them
        set_vis_backends(cfg, args.vis_backend)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    if run == 'train':
        if args.amp:
            enable_amp(cfg)
        if args.auto_scale_lr:
            _enable_auto_scale_lr(cfg, args.config)
        if args.resume == 'auto':
            cfg.resume, cfg.load_from = True, None
        elif args.resume is not None:
            cfg.resume, cfg.load_from = True, args.resume
    else:
        cfg.load_from = args.checkpoint
        if args.out:
            dump_predictions(cfg, args.out)
        if args.show_dir:
            draw_predictions(cfg, args.show_dir)
        if args.tta:
            enable_tta(cfg)
    return cfg


def _enable_auto_scale_lr(cfg: Config, config_path: str) -> None:
    """``--auto-scale-lr``: mmengine scales the learning rate by the images of
    one iteration (processes x batch) over ``auto_scale_lr.base_batch_size``;
    with gradient accumulation an optimizer step sees ``accumulative_counts``
    times more, so the base is divided by it."""
    if 'auto_scale_lr' not in cfg or 'base_batch_size' not in cfg.auto_scale_lr:
        raise KeyError('--auto-scale-lr needs auto_scale_lr.base_batch_size '
                       f'in the config {config_path}')
    cfg.auto_scale_lr.enable = True
    counts = cfg.optim_wrapper.get('accumulative_counts', 1)
    if counts > 1:
        cfg.auto_scale_lr.base_batch_size /= counts
        print(f'--auto-scale-lr with optim_wrapper.accumulative_counts={counts}: '
              f'scaling by {counts} x batch x processes / base batch size')


def prepare(cfg: Config, args: argparse.Namespace, run: str) -> Config:
    """Apply the command line of ``tools/train.py`` (``run='train'``) or
    ``tools/test.py`` (``run='test'``) to ``cfg`` and check that this machine
    can run it, before the Runner builds anything.

    In this order, each step changing ``cfg`` in place, so a later one wins
    over an earlier one:

    1. ``LOCAL_RANK`` is set from ``--local-rank`` unless already set
       (``torchrun`` sets it); ``cfg.launcher = --launcher``.
    2. ``--data-root``: every dataset and evaluator ``ann_file`` move there
       (:func:`~lightvit_mm.launch.data_root.set_data_root`).
    3. train: ``--vis-backend`` replaces ``visualizer.vis_backends``
       (:func:`~lightvit_mm.launch.vis_backends.set_vis_backends`).
    4. ``--cfg-options`` are merged: an option overrides what 2 and 3 set.
    5. ``work_dir``: ``--work-dir``, else the config's, else
       ``./work_dirs/<config name>``. Then the tool's flags, which override
       ``--cfg-options``: train: ``--amp`` (``AmpOptimWrapper``),
       ``--auto-scale-lr``, ``--resume`` (``resume``, ``load_from``); test:
       ``load_from`` = the checkpoint, ``--out``, ``--show-dir``, ``--tta``
       (:mod:`~lightvit_mm.launch.test_outputs`).
    6. Checks, none of which builds a dataset or a model: train: the
       visualization backends' packages, then mixed precision against the
       machine (:func:`~lightvit_mm.launch.amp.check_amp`, which also drops
       AMP arguments from an fp32 wrapper); both: the launcher against the
       machine (:func:`~lightvit_mm.launch.distributed.setup_distributed`:
       ``gloo`` without a GPU, where it also initialises the process group);
       last, the files the run reads (train: train and val dataloaders; test:
       the test dataloader), so a machine that cannot run the config says so
       before a missing file does.

    Args:
        cfg (Config): The config as read from ``args.config``.
        args (argparse.Namespace): The tool's parsed command line: ``config``,
            ``work_dir``, ``data_root``, ``cfg_options``, ``launcher``,
            ``local_rank``; for train also ``vis_backend``, ``amp``,
            ``auto_scale_lr``, ``resume``; for test ``checkpoint``, ``out``,
            ``show_dir``, ``tta``.
        run (str): ``'train'`` or ``'test'``.

    Returns:
        Config: ``cfg``, ready for ``Runner.from_cfg``.

    Raises:
        ValueError, KeyError: see :func:`apply_command_line`.
        ImportError: a visualization backend's package is missing.
        RuntimeError: mixed precision, or the ``slurm`` / ``mpi`` launcher,
            on a machine without a GPU.
        FileNotFoundError: a file or folder the run reads does not exist
            (each one named with its config key).
    """
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    apply_command_line(cfg, args, run)
    if run == 'train':
        check_vis_backends(cfg)
        check_amp(cfg)
    setup_distributed(cfg)
    check_data_files(cfg, RUN_LOADERS[run])
    return cfg

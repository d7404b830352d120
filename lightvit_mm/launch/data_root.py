# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""Point a config at another data folder (``tools/train.py --data-root``) and
check, before anything is built, that the files a run reads exist.

In mmdet's, mmseg's and mmpretrain's configs the data root appears in two
kinds of place: every dataset's ``data_root`` (``data/coco/``,
``data/ade/ADEChallengeData2016``, ``data/imagenet``), under which the
dataset's ``ann_file`` and ``data_prefix`` are read, and the evaluators'
``ann_file`` (mmdet's ``CocoMetric``), a full path written as
``data_root + 'annotations/instances_val2017.json'`` when the config was
parsed. Overriding only the datasets' roots leaves the evaluator on the old
folder; :func:`set_data_root` moves both.
"""
import copy
import os.path as osp
from typing import Iterator, List, Optional, Sequence, Tuple

from mmengine.config import Config
from mmengine.fileio import exists, join_path
from mmengine.logging import print_log
from mmengine.utils import is_abs

#: the help of the tools' ``--data-root`` option
DATA_ROOT_HELP = ('the data folder, in the layout the config expects: the datasets of '
                  'train/val/test and the evaluators\' ann_file move there (applied before '
                  '--cfg-options)')
#: the dataloaders of a run and the evaluator that scores each one's predictions
LOADERS = {'train_dataloader': None, 'val_dataloader': 'val_evaluator',
           'test_dataloader': 'test_evaluator'}


def _leaf_datasets(dataset) -> Iterator[dict]:
    """The dataset configs under ``dataset``, through mmengine's and the
    packages' wrappers (``dataset=`` as in ``RepeatDataset``, ``datasets=`` as
    in ``ConcatDataset``)."""
    if not isinstance(dataset, dict):
        return
    if isinstance(dataset.get('dataset'), dict):
        yield from _leaf_datasets(dataset['dataset'])
    elif isinstance(dataset.get('datasets'), (list, tuple)):
        for child in dataset['datasets']:
            yield from _leaf_datasets(child)
    else:
        yield dataset


def _evaluator_metrics(evaluator) -> List[dict]:
    """The metric configs of an evaluator config (one dict, or a list of them)."""
    if isinstance(evaluator, dict) and isinstance(evaluator.get('metrics'), (list, tuple)):
        return list(evaluator['metrics'])
    if isinstance(evaluator, dict):
        return [evaluator]
    return [m for m in evaluator or [] if isinstance(m, dict)]


def set_data_root(cfg: Config, data_root: str) -> List[str]:
    """Move every dataset of ``cfg`` and every evaluator ``ann_file`` under ``data_root``.

    - The ``data_root`` of each dataset in ``train_dataloader``,
      ``val_dataloader`` and ``test_dataloader`` (through dataset wrappers)
      becomes ``data_root``; their ``ann_file`` and ``data_prefix`` stay
      relative to it, so the new folder must have the layout the config
      expects (e.g. ``annotations/instances_val2017.json`` and ``val2017/``
      for COCO).
    - Each ``ann_file`` of ``val_evaluator`` / ``test_evaluator`` that lies
      under its dataloader's old root (``data/coco/annotations/...``) moves
      to the same place under ``data_root``; one elsewhere is kept, and the
      log line says so.
    - A top-level ``data_root`` variable, when the config has one, is set too
      (it is what the dumped config shows).

    One log line (mmengine's current logger) lists the changes. Apply it
    before ``--cfg-options``, so that an explicit option still wins.

    Args:
        cfg (Config): The full config; changed in place.
        data_root (str): The new root (a local folder or a path of one of
            mmengine's file backends).

    Returns:
        list[str]: The changes, as written in the log line.

    Raises:
        ValueError: ``data_root`` is empty, or ``cfg`` has no dataset to move.
    """
    if not data_root:
        raise ValueError('--data-root needs a folder, got an empty string')
    # Read everything before writing: val_evaluator and test_evaluator (and the
    # val and test dataloaders) are often one shared dict in a parsed config.
    loaders = {name: copy.deepcopy(cfg.get(name)) for name in LOADERS}
    evaluators = {name: copy.deepcopy(cfg.get(name)) for name in LOADERS.values() if name}
    moved, changes = [], []
    for name, loader in loaders.items():
        datasets = list(_leaf_datasets((loader or {}).get('dataset')))
        if not datasets:
            continue
        old_root = datasets[0].get('data_root') or ''
        for dataset in datasets:
            dataset['data_root'] = data_root
        cfg[name] = loader
        moved.append(name)
        evaluator_name = LOADERS[name]
        for metric in _evaluator_metrics(evaluators.get(evaluator_name)):
            ann_file = metric.get('ann_file')
            if not ann_file:
                continue
            relative = osp.relpath(ann_file, old_root or '.')
            if relative.startswith(osp.pardir):
                changes.append(f'{evaluator_name}.ann_file {ann_file} kept (not under the '
                               f'old root {old_root})')
            else:
                metric['ann_file'] = join_path(data_root, relative)
                changes.append(f'{evaluator_name}.ann_file {ann_file} -> {metric["ann_file"]}')
        if evaluator_name and evaluators.get(evaluator_name) is not None:
            cfg[evaluator_name] = evaluators[evaluator_name]
    if not moved:
        raise ValueError('--data-root: the config has no train/val/test dataset to move')
    if 'data_root' in cfg:
        cfg.data_root = data_root
    changes.insert(0, f'data_root of {", ".join(moved)} -> {data_root}')
    print_log(f'--data-root: {"; ".join(changes)}', logger='current')
    return changes


def load_config(path: str, data_root: Optional[str] = None,
                cfg_options: Optional[dict] = None) -> Config:
    """The config at ``path`` as the tools read it: moved under ``data_root``
    by :func:`set_data_root` when given, then ``cfg_options`` (``--cfg-options``)
    merged, so an option can still override a moved path.

    Raises:
        FileNotFoundError: ``path`` does not exist (mmengine's error).
    """
    cfg = Config.fromfile(path)
    if data_root:
        set_data_root(cfg, data_root)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def _files_read(cfg: Config, loader_name: str) -> Iterator[Tuple[str, str, dict]]:
    """(config key, path, backend_args) of each file or folder the dataloader
    ``loader_name`` and its evaluator read, as the datasets resolve them;
    nothing when the loop is off (``train_cfg``/``val_cfg``/``test_cfg`` None)."""
    loader = cfg.get(loader_name) or {}
    if cfg.get(loader_name.replace('dataloader', 'cfg')) is None:
        return
    for dataset in _leaf_datasets(loader.get('dataset')):
        root = dataset.get('data_root') or ''
        backend_args = dataset.get('backend_args')

        def resolve(path):
            return path if not root or is_abs(path) else join_path(root, path)

        key = f'{loader_name}.dataset'
        if dataset.get('ann_file'):
            yield f'{key}.ann_file', resolve(dataset['ann_file']), backend_args
        prefix = dataset.get('data_prefix')
        if not prefix and dataset.get('split'):  # mmpretrain's ImageNet: the split folder
            prefix = dataset['split']
        prefixes = prefix.items() if isinstance(prefix, dict) else [('', prefix)]
        for sub_key, path in prefixes:
            if isinstance(path, str) and path:
                yield (f'{key}.data_prefix{"." + sub_key if sub_key else ""}', resolve(path),
                       backend_args)
        if root and not dataset.get('ann_file') and not prefix:
            yield f'{key}.data_root', root, backend_args
    evaluator_name = LOADERS[loader_name]
    if evaluator_name and cfg.get(loader_name):
        for metric in _evaluator_metrics(cfg.get(evaluator_name)):
            if metric.get('ann_file'):
                yield (f'{evaluator_name}.ann_file', metric['ann_file'],
                       metric.get('backend_args'))


def check_data_files(cfg: Config, loader_names: Sequence[str]) -> None:
    """Fail before anything is built when a file or folder a run reads is missing.

    Checks, for each named dataloader whose loop is on in ``cfg``, its datasets'
    ``ann_file`` and ``data_prefix`` folders (resolved under their
    ``data_root`` as mmengine's ``BaseDataset`` does; mmpretrain's
    ``ImageNet`` ``split`` folder when there is no prefix) and its
    evaluator's ``ann_file``, with mmengine's file backends.

    Args:
        cfg (Config): The full config.
        loader_names (Sequence[str]): Dataloaders the run will use, e.g.
            ``('train_dataloader', 'val_dataloader')`` for training.

    Raises:
        FileNotFoundError: one or more are missing; the message names each
            one with the config key it comes from.
        KeyError: an unknown dataloader name.
    """
    missing = []
    for name in loader_names:
        if name not in LOADERS:
            raise KeyError(f'unknown dataloader {name!r}; expected one of {list(LOADERS)}')
        for key, path, backend_args in _files_read(cfg, name):
            if not exists(path, backend_args=backend_args):
                missing.append(f'{path} ({key})')
    if missing:
        raise FileNotFoundError(
            'the config reads files that do not exist: ' + ', '.join(missing) +
            '. Point it at your data with --data-root DIR (a folder in the layout the '
            'config expects) or --cfg-options.')

# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""Experiment tracking for ``tools/train.py --vis-backend``: mmengine's
visualization backends by short name, and a check, before anything is built,
that the package each one imports is installed (mmengine would only say so at
the first logged scalar)."""
import importlib.util
from typing import Sequence

from mmengine.config import Config

#: --vis-backend name -> (mmengine visualization backend, the package it imports)
VIS_BACKENDS = {
    'local': ('LocalVisBackend', None),
    'tensorboard': ('TensorboardVisBackend', 'tensorboard'),
    'wandb': ('WandbVisBackend', 'wandb'),
    'mlflow': ('MLflowVisBackend', 'mlflow'),
}


def set_vis_backends(cfg: Config, names: Sequence[str]) -> None:
    """Replace ``cfg.visualizer.vis_backends`` (``[local]`` in the OpenMMLab
    runtimes) with the backends of ``names``, in this order, each with
    mmengine's defaults (tune one with ``--cfg-options
    visualizer.vis_backends.INDEX.KEY=VALUE``).

    Raises:
        KeyError: a name that is not in :data:`VIS_BACKENDS`.
    """
    unknown = [name for name in names if name not in VIS_BACKENDS]
    if unknown:
        raise KeyError(f'unknown visualization backends {unknown}; accepted: '
                       f'{list(VIS_BACKENDS)}')
    cfg.visualizer.vis_backends = [dict(type=VIS_BACKENDS[name][0]) for name in names]


def check_vis_backends(cfg: Config) -> None:
    """Fail before anything is built when a visualization backend of ``cfg``
    needs a package that is not installed.

    Raises:
        ImportError: names the backend and the ``pip install`` that fixes it.
    """
    needs = {backend: package for backend, package in VIS_BACKENDS.values() if package}
    for backend in (cfg.get('visualizer') or {}).get('vis_backends') or []:
        package = needs.get(backend.get('type'))
        if package and importlib.util.find_spec(package) is None:
            raise ImportError(f'{backend["type"]} needs the {package} package, which is not '
                              f'installed: pip install {package}')

# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""Model configs as data: the model config a deployed folder carries in
``deploy.json``, built only through registered names.

A Python config file runs code when it is read; ``deploy.json`` holds the
model config as JSON instead, and :func:`check_config_types` accepts a
``type`` only when it is a name registered in the registry of the task's
package (or mmengine's), written ``Name`` or ``scope.Name`` -- never an
import path, so building it imports nothing and runs only library code.
``init_cfg`` / ``pretrained`` entries (which would read checkpoint files)
are dropped by :func:`to_data`.
"""
import re
from typing import Any

from mmengine.config import ConfigDict
from mmengine.registry import DefaultScope, Registry

#: scopes a ``scope.Name`` type may name
SCOPES = ('mmdet', 'mmseg', 'mmpretrain', 'mmengine')
_NAME = re.compile(r'^(?:([A-Za-z_]\w*)\.)?([A-Za-z_]\w*)$')
#: config keys whose ``type`` names an mmcv op, not a registry entry: mmdet's
#: NMS settings (``mmcv.ops.batched_nms``) and RoI layers (``getattr(mmcv.ops, type)``)
OP_KEYS = ('nms', 'roi_layer')
#: keys never kept: they make a built model read a file (weights) when initialised
DROPPED_KEYS = ('init_cfg', 'pretrained')


def to_data(cfg: Any) -> Any:
    """``cfg`` (a ConfigDict or plain dict/list tree) as plain JSON data:
    tuples become lists, :data:`DROPPED_KEYS` are removed.

    Raises:
        TypeError: a value is not JSON data (e.g. a class or function in a
            lazy-import config).
    """
    if isinstance(cfg, dict):
        return {str(k): to_data(v) for k, v in cfg.items() if k not in DROPPED_KEYS}
    if isinstance(cfg, (list, tuple)):
        return [to_data(v) for v in cfg]
    if cfg is None or isinstance(cfg, (bool, int, float, str)):
        return cfg
    raise TypeError(f'config value {cfg!r} ({type(cfg).__name__}) cannot be written as JSON; '
                    'the deployed model config must use string types')


def _registered(registry: Registry, scope: str, name: str) -> bool:
    """Whether ``name`` is registered in ``registry`` of ``scope`` or one of
    its parents (looked up in the registries' tables: nothing is imported)."""
    root = registry
    while root.parent is not None:
        root = root.parent
    target = root if scope == root.scope else root._search_child(scope)
    while target is not None:
        if name in target.module_dict:
            return True
        target = target.parent
    return False


def _is_op(key: str, name: str) -> bool:
    """Whether ``name`` under the config key ``key`` names an mmcv op (see :data:`OP_KEYS`)."""
    if key == 'nms':
        return name in ('nms', 'soft_nms')
    import mmcv.ops
    return key == 'roi_layer' and isinstance(getattr(mmcv.ops, name, None), type)


def check_config_types(cfg: Any, scope: str, registries, where: str = 'model') -> None:
    """Refuse ``cfg`` unless every ``type`` in it is a registered name (or,
    under the keys :data:`OP_KEYS`, an mmcv op's name).

    Args:
        cfg: The config tree (plain data, e.g. from deploy.json).
        scope (str): The package whose registries are searched first
            ('mmdet', 'mmseg', 'mmpretrain').
        registries (Sequence[Registry]): Registries a type may come from
            (``MODELS``, ``TASK_UTILS`` of the package).
        where (str): Path of ``cfg`` for the error message.

    Raises:
        ValueError: a ``type`` is not a string of the form ``Name`` or
            ``scope.Name`` with a known scope, or is not registered.
    """
    if isinstance(cfg, list):
        for i, v in enumerate(cfg):
            check_config_types(v, scope, registries, f'{where}[{i}]')
        return
    if not isinstance(cfg, dict):
        return
    if 'type' in cfg:
        kind = cfg['type']
        match = _NAME.match(kind) if isinstance(kind, str) else None
        if match is None or (match.group(1) and match.group(1) not in SCOPES):
            raise ValueError(f'{where}.type={kind!r}: only registered names ("Name" or '
                             f'"scope.Name", scope one of {SCOPES}) are accepted')
        type_scope, name = match.group(1) or scope, match.group(2)
        if match.group(1) is None and _is_op(where.rsplit('.', 1)[-1], name):
            pass
        elif not any(_registered(r, type_scope, name) for r in registries):
            raise ValueError(f'{where}.type={kind!r} is not registered in {type_scope}\'s '
                             'MODELS/TASK_UTILS; refused')
    for k, v in cfg.items():
        check_config_types(v, scope, registries, f'{where}.{k}')


def build_from_data(cfg: dict, scope: str):
    """Build the model config ``cfg`` (plain data) in the registry of
    ``scope`` after :func:`check_config_types`.

    Raises:
        ValueError: see :func:`check_config_types`.
    """
    import importlib
    # the package's modules register themselves when imported (lazily in a fresh process)
    importlib.import_module(f'{scope}.utils').register_all_modules(init_default_scope=False)
    registry_module = importlib.import_module(f'{scope}.registry')
    registries = [registry_module.MODELS, registry_module.TASK_UTILS]
    cfg = to_data(cfg)
    check_config_types(cfg, scope, registries)
    with DefaultScope.overwrite_default_scope(scope):  # mmdet reads train_cfg.rpn etc.
        return registry_module.MODELS.build(ConfigDict(cfg))

# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""Registers the lightvit-mm models in every installed OpenMMLab package.

mmdet, mmseg and mmpretrain each keep their own ``MODELS`` registry, and a
config inheriting ``mmdet::``/``mmseg::``/``mmpretrain::`` builds its model in
that package's scope. Registering in each lets a plain ``type='LightViT'``
work whatever the scope. A package that is not installed is skipped. The
official RandAugment ops of :mod:`lightvit_mm.datasets.transforms` go into
mmpretrain's ``TRANSFORMS``, where its ``RandAugment`` builds its policies.
"""
import importlib
from typing import Dict, List, Tuple

from .models import LightViT, LightViTClsNeck, LightViTFPN

#: registry module of each package -> the classes registered there
TARGETS: Dict[str, List[type]] = {
    'mmdet.registry': [LightViT, LightViTFPN],
    'mmseg.registry': [LightViT, LightViTFPN],
    'mmpretrain.registry': [LightViT, LightViTClsNeck],
}

#: registry module -> (module of data transforms, its list of classes),
#: registered in that package's ``TRANSFORMS``
TRANSFORM_TARGETS: Dict[str, Tuple[str, str]] = {
    'mmpretrain.registry': ('lightvit_mm.datasets.transforms', 'OFFICIAL_EXTRA_OPS'),
}


def _register(registry, label: str, classes: List[type]) -> None:
    for cls in classes:
        existing = registry.module_dict.get(cls.__name__)
        if existing is None:
            registry.register_module(module=cls)
        elif existing is not cls:
            raise KeyError(
                f'{label} already holds another {cls.__name__} '
                f'({existing.__module__}); lightvit_mm will not replace it')


def register_all_modules() -> List[str]:
    """Register the classes of :data:`TARGETS` in each installed package's
    ``MODELS`` and those of :data:`TRANSFORM_TARGETS` in its ``TRANSFORMS``.

    Returns:
        list[str]: The packages whose ``MODELS`` now hold the classes.

    Raises:
        KeyError: another class is already registered under one of our names
            in a package's ``MODELS`` or ``TRANSFORMS`` (we never replace
            someone else's class).
    """
    registered = []
    for module_name, classes in TARGETS.items():
        try:
            package = importlib.import_module(module_name)
        except ImportError:
            continue
        _register(package.MODELS, f'{module_name}.MODELS', classes)
        if module_name in TRANSFORM_TARGETS:
            source, name = TRANSFORM_TARGETS[module_name]
            _register(package.TRANSFORMS, f'{module_name}.TRANSFORMS',
                      getattr(importlib.import_module(source), name))
        registered.append(module_name.split('.')[0])
    return registered

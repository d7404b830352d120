# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""Registers the lightvit-mm models in every installed OpenMMLab package.

mmdet, mmseg and mmpretrain each keep their own ``MODELS`` registry, and a
config inheriting ``mmdet::``/``mmseg::``/``mmpretrain::`` builds its model in
that package's scope. Registering in each lets a plain ``type='LightViT'``
work whatever the scope. A package that is not installed is skipped.
"""
import importlib
from typing import Dict, List

from .models import LightViT, LightViTClsNeck, LightViTFPN

#: registry module of each package -> the classes registered there
TARGETS: Dict[str, List[type]] = {
    'mmdet.registry': [LightViT, LightViTFPN],
    'mmseg.registry': [LightViT, LightViTFPN],
    'mmpretrain.registry': [LightViT, LightViTClsNeck],
}


def register_all_modules() -> List[str]:
    """Register the classes of :data:`TARGETS` in each installed package.

    Returns:
        list[str]: The packages whose ``MODELS`` now hold the classes.

    Raises:
        KeyError: another class is already registered under one of our names
            in a package's ``MODELS`` (we never replace someone else's class).
    """
    registered = []
    for module_name, classes in TARGETS.items():
        try:
            registry = importlib.import_module(module_name).MODELS
        except ImportError:
            continue
        for cls in classes:
            existing = registry.module_dict.get(cls.__name__)
            if existing is None:
                registry.register_module(module=cls)
            elif existing is not cls:
                raise KeyError(
                    f'{module_name}.MODELS already holds another {cls.__name__} '
                    f'({existing.__module__}); lightvit_mm will not replace it')
        registered.append(module_name.split('.')[0])
    return registered

# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""Registers the lightvit-mm models in every installed OpenMMLab package.

mmdet, mmseg and mmpretrain each keep their own ``MODELS`` registry, and a
config inheriting ``mmdet::``/``mmseg::``/``mmpretrain::`` builds its model in
that package's scope. Registering in each lets a plain ``type='LightViT'``
work whatever the scope. A package that is not installed is skipped; one that
is installed but fails to import raises its error. The official RandAugment ops
of :mod:`lightvit_mm.datasets.transforms` go into mmpretrain's ``TRANSFORMS``,
where its ``RandAugment`` builds its policies.
"""
import importlib
import importlib.metadata
import importlib.util
from typing import Dict, List, Optional, Tuple

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


#: transformers releases from this one on break ``import mmpretrain`` 1.2.0
#: (with pycocotools installed, mmpretrain imports its multimodal models): 4.52
#: stopped re-exporting ``GenerationMixin`` from ``transformers.modeling_utils``
#: (``ImportError`` in mmpretrain's OFA module); 4.56 also dropped
#: ``apply_chunking_to_forward`` and ``find_pruneable_heads_and_indices`` there,
#: so mmpretrain's BLIP module, imported first, subclasses None (``TypeError:
#: NoneType takes no arguments``, as with 5.x). 4.51.3 imports. The
#: ``[mmpretrain]`` extra in setup.py asks for an earlier release.
TRANSFORMERS_BREAKING_MMPRETRAIN = '4.52'


def _transformers_breaking_mmpretrain() -> Optional[str]:
    """The installed transformers version if it breaks mmpretrain 1.2.0's
    import, else None."""
    from mmengine.utils import digit_version
    try:
        version = importlib.metadata.version('transformers')
    except importlib.metadata.PackageNotFoundError:
        return None
    breaks = digit_version(version) >= digit_version(TRANSFORMERS_BREAKING_MMPRETRAIN)
    return version if breaks else None


def check_mmpretrain_imports() -> None:
    """Import ``mmpretrain.models`` when the installed transformers release
    is one that breaks it (:data:`TRANSFORMERS_BREAKING_MMPRETRAIN`), so that
    the failure shows at ``import lightvit_mm`` in one line instead of at the
    first mmpretrain build as mmpretrain's own error. Costs nothing otherwise.

    Raises:
        ImportError: ``mmpretrain.models`` does not import with this
            transformers: says which versions and what to install (the
            original error is its ``__cause__``).
    """
    version = _transformers_breaking_mmpretrain()
    if version is None:
        return
    try:
        importlib.import_module('mmpretrain.models')
    except (ImportError, TypeError) as error:
        raise ImportError(
            f'mmpretrain {importlib.metadata.version("mmpretrain")} does not import with '
            f'transformers {version} ({type(error).__name__}: {error}); it needs transformers '
            f'< {TRANSFORMERS_BREAKING_MMPRETRAIN}: pip install '
            f'"transformers<{TRANSFORMERS_BREAKING_MMPRETRAIN}", or pip uninstall transformers '
            'if nothing else needs it') from error


def _import_registry(module_name: str):
    """``module_name`` imported, or None when its package is not installed.

    Raises:
        ImportError: the package is installed but does not import (e.g.
            mmpretrain without torchvision): its own error, not a silent skip;
            for mmpretrain with a transformers release that breaks it, see
            :func:`check_mmpretrain_imports`.
    """
    if importlib.util.find_spec(module_name.split('.')[0]) is None:
        return None
    module = importlib.import_module(module_name)
    if module_name.startswith('mmpretrain.'):
        check_mmpretrain_imports()
    return module


def register_all_modules() -> List[str]:
    """Register the classes of :data:`TARGETS` in each installed package's
    ``MODELS`` and those of :data:`TRANSFORM_TARGETS` in its ``TRANSFORMS``.

    Returns:
        list[str]: The packages whose ``MODELS`` now hold the classes.

    Raises:
        ImportError: an installed package does not import, e.g. mmpretrain
            with a transformers release that breaks it
            (:func:`check_mmpretrain_imports`).
        KeyError: another class is already registered under one of our names
            in a package's ``MODELS`` or ``TRANSFORMS`` (we never replace
            someone else's class).
    """
    registered = []
    for module_name, classes in TARGETS.items():
        package = _import_registry(module_name)
        if package is None:
            continue
        _register(package.MODELS, f'{module_name}.MODELS', classes)
        if module_name in TRANSFORM_TARGETS:
            source, name = TRANSFORM_TARGETS[module_name]
            _register(package.TRANSFORMS, f'{module_name}.TRANSFORMS',
                      getattr(importlib.import_module(source), name))
        registered.append(module_name.split('.')[0])
    return registered

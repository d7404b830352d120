"""lightvit-mm: LightViT (arXiv:2207.05557) for mmdet, mmseg and mmpretrain.

``import lightvit_mm`` (or ``custom_imports=dict(imports=['lightvit_mm'])`` in
a config) registers :class:`LightViT`, :class:`LightViTFPN` and
:class:`LightViTClsNeck` in the ``MODELS`` registry of every installed
OpenMMLab package that uses them, and :class:`~lightvit_mm.engine.hooks.RNGStateHook`
(exact resume) in mmengine's ``HOOKS``.
"""
from .engine import hooks  # noqa: F401  (registers RNGStateHook in mmengine's HOOKS)
from .models import LightViT, LightViTClsNeck, LightViTFPN
from .registry import register_all_modules
from .version import __version__

REGISTERED_IN = register_all_modules()

__all__ = ['LightViT', 'LightViTClsNeck', 'LightViTFPN', 'register_all_modules', '__version__']

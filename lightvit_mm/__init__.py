"""lightvit-mm: LightViT (arXiv:2207.05557) for mmdet, mmseg and mmpretrain.

``import lightvit_mm`` (or ``custom_imports=dict(imports=['lightvit_mm'])`` in
a config) registers :class:`LightViT`, :class:`LightViTFPN` and
:class:`LightViTClsNeck` in the ``MODELS`` registry of every installed
OpenMMLab package that uses them, and :class:`~lightvit_mm.engine.hooks.rng_state_hook.RNGStateHook`
(exact resume) and :class:`~lightvit_mm.engine.hooks.compile_hook.CompileModuleHook`
(``torch.compile`` of the backbone from a config) in mmengine's ``HOOKS``. It
also adds the checked stand-ins of :mod:`lightvit_mm.checkpoint.safe_unpickling` to
torch's weights-only allow-list, so mmengine checkpoints open in the stock
OpenMMLab APIs with safe loading on (``LIGHTVIT_MM_SAFE_GLOBALS=0`` opts out).
"""
from .checkpoint.safe_unpickling import register_safe_globals
from .engine import hooks  # noqa: F401  (registers the hooks in mmengine's HOOKS)
from .models import LightViT, LightViTClsNeck, LightViTFPN
from .registration import register_all_modules
from .version import __version__

REGISTERED_IN = register_all_modules()
SAFE_GLOBALS_REGISTERED = register_safe_globals()

__all__ = ['LightViT', 'LightViTClsNeck', 'LightViTFPN', 'register_all_modules', '__version__']

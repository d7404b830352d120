"""mmengine hooks, one per module, registered in mmengine's ``HOOKS`` on import."""
from .compile_hook import CompileModuleHook
from .rng_state_hook import RNGStateHook

__all__ = ['CompileModuleHook', 'RNGStateHook']

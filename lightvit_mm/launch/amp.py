# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""Mixed precision for ``tools/train.py``: ``--amp``, and the settings checked
before anything is built.

mmengine 0.10.7's ``AmpOptimWrapper`` (what ``--amp`` and the ``amp`` configs
use, fp16 or bf16) asserts a GPU, NPU, MLU or MUSA device in its constructor,
which the Runner calls after it has built the datasets and the model; and
``OptimWrapper`` takes no ``loss_scale`` or ``dtype``, so an ``amp`` config
switched to fp32 with ``--cfg-options optim_wrapper.type=OptimWrapper`` would
fail there too.
"""
from mmengine.config import Config
from mmengine.device import is_cuda_available, is_mlu_available, is_musa_available, is_npu_available
from mmengine.logging import print_log
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS

#: AmpOptimWrapper's own arguments, which OptimWrapper does not take
AMP_ARGS = ('loss_scale', 'dtype', 'use_fsdp')


def check_amp(cfg: Config) -> None:
    """Check ``cfg.optim_wrapper`` against the machine, before anything is built.

    - An ``AmpOptimWrapper`` (or subclass) without a GPU, NPU, MLU or MUSA
      device raises.
    - A plain ``OptimWrapper`` holding ``AmpOptimWrapper``'s arguments
      (:data:`AMP_ARGS`, left by an ``amp`` config switched to fp32 with
      ``--cfg-options optim_wrapper.type=OptimWrapper``) loses them, with a
      log line.

    Args:
        cfg (Config): The full config; ``optim_wrapper`` may change.

    Raises:
        RuntimeError: mixed precision on a machine without such a device; the
            message names the fp32 alternative.
    """
    optim_wrapper = cfg.get('optim_wrapper') or {}
    wrapper_type = optim_wrapper.get('type', 'OptimWrapper')
    if isinstance(wrapper_type, str):
        wrapper_type = OPTIM_WRAPPERS.get(wrapper_type)
    if wrapper_type is OptimWrapper:
        dropped = [key for key in AMP_ARGS if key in optim_wrapper]
        if dropped:
            print_log(f'optim_wrapper.type=OptimWrapper (fp32): mixed-precision arguments '
                      f'{dropped} dropped', logger='current')
            for key in dropped:
                optim_wrapper.pop(key)
    if not (isinstance(wrapper_type, type) and issubclass(wrapper_type, AmpOptimWrapper)):
        return
    if is_cuda_available() or is_npu_available() or is_mlu_available() or is_musa_available():
        return
    dtype = optim_wrapper.get('dtype') or 'float16'
    raise RuntimeError(
        f'optim_wrapper.type={optim_wrapper["type"]!r} (mixed precision, dtype {dtype}) '
        'needs a GPU, NPU, MLU or MUSA device and this machine has none: mmengine\'s '
        'AmpOptimWrapper refuses to start on a CPU, in fp16 and in bf16 alike. Train in '
        'fp32 here with --cfg-options optim_wrapper.type=OptimWrapper (and without --amp), '
        'or run the config on a GPU (fp16; bf16 with optim_wrapper.dtype=bfloat16).')


def enable_amp(cfg: Config) -> None:
    """``tools/train.py --amp``: train under mmengine's ``AmpOptimWrapper``
    (``loss_scale='dynamic'`` unless the config sets one; fp16, or the
    config's ``optim_wrapper.dtype``). A config that already uses it is left
    as it is, with a printed note."""
    if cfg.optim_wrapper.get('type', 'OptimWrapper') == 'AmpOptimWrapper':
        print('AMP is already enabled in the config.')
    else:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')

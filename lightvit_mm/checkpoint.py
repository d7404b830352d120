# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""Safe loading of mmengine's own checkpoints with torch >= 2.6.

torch >= 2.6 loads with ``weights_only=True`` by default, and mmengine 0.10.7
checkpoints carry, besides tensors, the runner's message hub: ``HistoryBuffer``
objects holding numpy arrays and scalars, whose ``statistics_methods`` dict is
pickled through ``builtins.getattr``. So ``load_from``, ``--resume`` and
``init_detector`` fail on them. Rather than turning safe loading off, the
context manager below allow-lists exactly those globals. The weights-only
unpickler only *calls* allow-listed callables, so a file can still build
nothing else.
"""
import builtins
import contextlib
from typing import Iterator, List

import numpy as np
import torch
from mmengine.logging import HistoryBuffer


def mmengine_checkpoint_globals() -> List:
    """The globals, beyond torch's defaults, that an mmengine 0.10 checkpoint
    needs (found with ``torch.serialization.get_unsafe_globals_in_checkpoint``
    on a checkpoint written by ``Runner``)."""
    multiarray = np._core.multiarray if hasattr(np, '_core') else np.core.multiarray
    # numpy >= 1.25 pickles each dtype with its class (np.dtypes.Float64DType, ...).
    dtype_classes = [cls for cls in vars(getattr(np, 'dtypes', object)).values()
                     if isinstance(cls, type) and issubclass(cls, np.dtype)]
    return [HistoryBuffer, np.ndarray, np.dtype, multiarray.scalar,
            multiarray._reconstruct, builtins.getattr, *dtype_classes]


@contextlib.contextmanager
def safe_mmengine_checkpoints() -> Iterator[None]:
    """Within this context, ``torch.load`` (weights-only) reads mmengine's
    checkpoints; anything else not allow-listed still fails to load."""
    with torch.serialization.safe_globals(mmengine_checkpoint_globals()):
        yield

# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""Training hooks: :class:`RNGStateHook` makes a resumed run continue with the
random numbers an uninterrupted run would have drawn.

mmengine 0.10.7 restores the weights, the optimizer, the parameter schedulers,
the message hub and the data order on ``resume`` (the iteration-based loop
fetches and drops the batches already trained on), but not the states of the
random number generators: the resumed process starts again from the seed. So
everything random in the model (drop-path masks, the RPN and RoI samplers'
``randperm``) draws other numbers than the uninterrupted run, and the resumed
run ends with other weights. ``import lightvit_mm`` registers this hook in
mmengine's ``HOOKS`` (found from every package's scope); add
``custom_hooks = [dict(type='RNGStateHook')]`` to a config to use it.
"""
import random
from typing import Optional

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Save the random generators' states in every checkpoint and restore them
    when training resumes from it.

    Saved under ``checkpoint['rng_state']``: torch's CPU generator, the CUDA
    generators (when CUDA is available), numpy's global generator and
    Python's ``random``: tensors, tuples, ints and a numeric numpy array, all
    read by ``torch.load(weights_only=True)`` once ``lightvit_mm`` is imported
    (:mod:`lightvit_mm.checkpoint.safe_unpickling`).

    The states are restored at the start of the first resumed iteration, after
    the loop has skipped the batches already trained on, so whatever the skip
    drew is forgotten. The resumed run then draws the same numbers as an
    uninterrupted one, except for what fetching the first resumed batch draws
    in the main process before the hook runs: random transforms with
    ``num_workers=0``, or the loader's one draw when that batch starts a new
    pass over the data (the resumed iteration is a multiple of the iterations
    per epoch). Workers' own generators (``num_workers > 0``) are seeded by
    mmengine and replayed by the skip. In distributed training only rank 0
    writes checkpoints, so every rank gets rank 0's states.

    Checkpoints without ``rng_state`` resume as before, and loading weights
    with ``load_from`` (not resuming) leaves the generators alone.
    """
    priority = 'VERY_LOW'

    def __init__(self):
        self._pending: Optional[dict] = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        state = dict(torch=torch.get_rng_state(), numpy=np.random.get_state(),
                     python=random.getstate())
        if torch.cuda.is_available():
            state['cuda'] = torch.cuda.get_rng_state_all()
        checkpoint['rng_state'] = state

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        # runner.load_checkpoint serves both resume and load_from; only a
        # resume continues the same run.
        if getattr(runner, '_resume', False):
            self._pending = checkpoint.get('rng_state')

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if self._pending is None:
            return
        state, self._pending = self._pending, None
        torch.set_rng_state(state['torch'].cpu())
        np.random.set_state(state['numpy'])
        random.setstate(state['python'])
        if 'cuda' in state and torch.cuda.is_available():
            cuda_states = state['cuda']
            if len(cuda_states) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])

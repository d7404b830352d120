# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""Reading checkpoints: safely, and whatever their wrapping.

Files are read weights-only (``torch.load(weights_only=True)``); what an
mmengine checkpoint needs beyond torch's defaults is allow-listed through the
checked stand-ins of :mod:`lightvit_mm.checkpoint.safe_unpickling`, never the
objects themselves.

The official LightViT checkpoints come as raw state dicts, as
``{'state_dict': ...}`` or in the training format ``{'epoch', 'model',
'ema_model', 'optimizer'}``; OpenMMLab checkpoints prefix the backbone with
``backbone.``. :func:`extract_state_dict` and :func:`strip_prefixes` unwrap
them all.
"""
import contextlib
import os
import os.path as osp
import pickle
import re
import tempfile
from typing import Iterator, Optional

import torch

from .safe_unpickling import safe_globals


@contextlib.contextmanager
def safe_mmengine_checkpoints() -> Iterator[None]:
    """Within this context, ``torch.load`` (weights-only) reads mmengine's
    checkpoints through the checked stand-ins of
    :func:`lightvit_mm.checkpoint.safe_unpickling.safe_globals`, also when
    ``LIGHTVIT_MM_SAFE_GLOBALS=0`` kept them out of the process-wide
    allow-list; anything else still fails to load."""
    present = torch.serialization.get_safe_globals()
    # torch's context manager removes its entries on exit: give it only those
    # not registered already (by ``import lightvit_mm``), which must stay.
    with torch.serialization.safe_globals([e for e in safe_globals() if e not in present]):
        yield


def load_checkpoint_file(filename: str, map_location='cpu', weights_only: bool = True):
    """Read a checkpoint file or URL, weights-only by default.

    Local files are read with ``torch.load(weights_only=weights_only)`` with
    the checked stand-ins for mmengine's objects (:func:`safe_mmengine_checkpoints`); other
    locations (``http(s)://``, ``s3://``, ...) go through mmengine's
    ``CheckpointLoader``, also weights-only.

    Args:
        filename (str): Path or URL.
        map_location (str | torch.device): Where tensors go. Defaults to 'cpu'.
        weights_only (bool): False unpickles anything (only for files you
            trust; local files only). Defaults to True.

    Returns:
        The loaded object (usually a dict).

    Raises:
        FileNotFoundError: a local ``filename`` does not exist.
        RuntimeError: weights-only loading refused the file; the message says
            what it held and how to opt out.
    """
    from mmengine.runner.checkpoint import CheckpointLoader
    is_local = '://' not in filename
    if is_local and not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint file {filename!r} does not exist')
    try:
        with safe_mmengine_checkpoints():
            if is_local:
                return torch.load(filename, map_location=map_location,
                                  weights_only=weights_only)
            return CheckpointLoader.load_checkpoint(filename, map_location=map_location)
    except pickle.UnpicklingError as error:
        # torch's message: the refused global is on its 'WeightsUnpickler error' line.
        reason = re.search(r'WeightsUnpickler error:\s*([^\n]*?)(?: was not| Please|$)',
                           str(error), re.M)
        refused = reason.group(1) if reason else 'see torch.load'
        raise RuntimeError(
            f'{filename} holds objects that weights-only loading refuses '
            f'({refused}). If you trust the file, load it with '
            "weights_only=False (e.g. init_cfg=dict(type='Pretrained', "
            "checkpoint=..., weights_only=False)).") from error


def save_checkpoint_atomic(obj, filename: str) -> None:
    """``torch.save(obj)`` to ``filename`` atomically: written to a temporary
    file in the same folder, then renamed, so an interrupted save never
    leaves a half-written checkpoint (the folder is created if needed)."""
    folder = osp.dirname(osp.abspath(filename))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix='.' + osp.basename(filename), suffix='.tmp')
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, filename)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


def extract_state_dict(checkpoint, checkpoint_key: str = 'model'):
    """The state dict inside a checkpoint, whatever its wrapping.

    Accepted: ``{'state_dict': ...}`` (mmengine, the official converter),
    the official training format ``{'epoch', 'model', 'ema_model',
    'optimizer'}`` (``checkpoint_key`` picks ``'model'`` or ``'ema_model'``),
    or a raw state dict of tensors.

    Returns:
        tuple: (state dict, a short description of where it was found).

    Raises:
        KeyError: ``checkpoint_key`` is not ``'model'``/``'ema_model'``, or
            ``'ema_model'`` was asked for and the checkpoint has none.
        ValueError: the object is none of the accepted formats.
    """
    if checkpoint_key not in ('model', 'ema_model'):
        raise KeyError(f"checkpoint_key must be 'model' or 'ema_model', got {checkpoint_key!r}")
    if not isinstance(checkpoint, dict):
        raise ValueError(f'a checkpoint must be a dict, got {type(checkpoint).__name__}')
    if checkpoint_key == 'ema_model' and not isinstance(checkpoint.get('ema_model'), dict):
        raise KeyError("checkpoint_key='ema_model' but the checkpoint has no 'ema_model' "
                       f'(top-level keys: {sorted(checkpoint)[:10]})')
    if isinstance(checkpoint.get('state_dict'), dict):
        return checkpoint['state_dict'], "['state_dict']"
    if isinstance(checkpoint.get(checkpoint_key), dict):
        return checkpoint[checkpoint_key], f"[{checkpoint_key!r}]"
    if checkpoint and all(torch.is_tensor(v) for v in checkpoint.values()):
        return checkpoint, 'a raw state dict'
    raise ValueError('unrecognised checkpoint format: expected a state dict, '
                     "{'state_dict': ...} or the official {'model', 'ema_model', ...}; "
                     f'top-level keys: {sorted(map(str, checkpoint))[:10]}')


def strip_prefixes(state_dict, prefix: Optional[str] = None):
    """Remove ``module.`` (DataParallel/DDP) and a sub-module prefix.

    With ``prefix`` (e.g. ``'backbone.'``) only keys under it are kept; with
    None, ``'backbone.'`` is taken when any key has it (an mmdet, mmseg or
    mmpretrain checkpoint), else the keys are kept as they are.
    """
    state_dict = {re.sub(r'^(module\.)+', '', k): v for k, v in state_dict.items()}
    if prefix is None and any(k.startswith('backbone.') for k in state_dict):
        prefix = 'backbone.'
    if prefix:
        state_dict = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    return state_dict

# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""Prepare a trained checkpoint for release (OpenMMLab's ``publish_model``).

Keeps the weights (``state_dict``) and the metadata that inference needs
(``meta.dataset_meta``: class names and palette; ``meta.cfg``: the config
text; the mmengine version), drops the optimizer, the parameter schedulers,
the message hub and the random states, and writes a file that plain
``torch.load(weights_only=True)`` reads with no allow-list at all. The file
is named ``<out stem>-<first 8 hex digits of its sha256>.pth``, as mmdet's
tool names it; it is written atomically, and an existing release is never
overwritten: publishing again under a name that has a release
(``<out stem>-XXXXXXXX.pth``) fails.

Example:
    python tools/model_converters/publish_model.py \
        work_dirs/digits_demo/iter_600.pth release/mask-rcnn_lightvit-t_digits.pth
    # -> release/mask-rcnn_lightvit-t_digits-<sha8>.pth
"""
import argparse
import glob
import hashlib
import os
import os.path as osp
import re
import sys
from typing import Any

import numpy as np
import torch

from lightvit_mm.checkpoint.io import load_checkpoint_file, save_checkpoint_atomic

#: the ``meta`` entries a released checkpoint keeps
KEPT_META = ('dataset_meta', 'cfg', 'mmengine_version', 'experiment_name')
#: types that torch's weights-only unpickler builds without any allow-list
PLAIN_TYPES = (str, int, float, bool, type(None))


def plain(value: Any, where: str) -> Any:
    """``value`` as plain Python containers and scalars (numpy scalars and
    arrays become Python numbers and lists).

    Raises:
        TypeError: an object that would need an allow-list to load; the
            message names where it is.
    """
    if isinstance(value, PLAIN_TYPES):
        return value
    if isinstance(value, (np.generic, np.ndarray)) and value.dtype.kind in 'biuf':
        return value.tolist()
    if isinstance(value, (list, tuple)):
        items = [plain(v, f'{where}[{i}]') for i, v in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, dict):
        return {plain(k, f'{where} key'): plain(v, f'{where}[{k!r}]') for k, v in value.items()}
    raise TypeError(f'{where} is a {type(value).__name__}, which a released checkpoint '
                    'cannot hold (only str, numbers, bool, None, lists, tuples, dicts)')


def publish(src: str, out: str) -> str:
    """Write the release file for checkpoint ``src``; returns its path.

    Raises:
        FileNotFoundError: ``src`` does not exist.
        FileExistsError: the release file exists already.
        KeyError: ``src`` has no ``state_dict``.
        TypeError: kept metadata hold other objects than plain values.
    """
    checkpoint = load_checkpoint_file(src)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get('state_dict'), dict):
        keys = sorted(map(str, checkpoint))[:10] if isinstance(checkpoint, dict) else None
        raise KeyError(f'{src} has no state_dict (top-level keys: {keys})')
    state_dict = {k: v for k, v in checkpoint['state_dict'].items() if torch.is_tensor(v)}
    meta = checkpoint.get('meta') or {}
    meta = {k: plain(meta[k], f'meta[{k!r}]') for k in KEPT_META if k in meta}
    stem = out[:-len('.pth')] if out.endswith('.pth') else out
    released = [f for f in glob.glob(glob.escape(stem) + '-*.pth')
                if re.fullmatch(r'-[0-9a-f]{8}\.pth', f[len(stem):])]
    if released:
        raise FileExistsError(f'{released[0]} exists; publish_model never overwrites a '
                              'release (torch.save is not byte-stable, so a new file would '
                              'get another hash): remove it or choose another name')
    tmp = f'{stem}.unhashed.pth'
    if osp.exists(tmp):
        raise FileExistsError(f'{tmp} exists (left by another run?); remove it first')
    save_checkpoint_atomic(dict(state_dict=state_dict, meta=meta), tmp)
    try:
        with open(tmp, 'rb') as f:
            sha = hashlib.sha256(f.read()).hexdigest()
        final = f'{stem}-{sha[:8]}.pth'
        if osp.exists(final):
            raise FileExistsError(f'{final} exists; publish_model never overwrites a file')
        os.rename(tmp, final)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)
    return final


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('in_file', help='checkpoint written by training (any mmengine checkpoint)')
    parser.add_argument('out_file', help='output name; the sha256 prefix is added before .pth')
    args = parser.parse_args(argv)
    try:
        final = publish(args.in_file, args.out_file)
    except (FileExistsError, KeyError, TypeError) as error:
        sys.exit(f'publish_model: {error}')
    print(f'published {args.in_file} as {final}')


if __name__ == '__main__':
    main()

# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""LightViT's own weight logic, beside the backbone (as mmdet's
``swin_converter`` and timm's ``checkpoint_filter_fn``): which arch an
official state dict was made with, and loading an official or OpenMMLab
checkpoint into a :class:`~lightvit_mm.models.backbones.lightvit.LightViT`
(the ``Pretrained`` init_cfg). Reading and unwrapping the files is
:mod:`lightvit_mm.checkpoint.io`'s.
"""
import logging
from typing import Dict, Optional

import torch
from mmengine.logging import print_log

from lightvit_mm.checkpoint.io import extract_state_dict, load_checkpoint_file, strip_prefixes

#: top-level modules of the official classifier that a backbone does not have
CLASSIFIER_PARTS = ('norm', 'neck', 'head')

def infer_lightvit_arch(state_dict) -> dict:
    """The ``LightViT`` arguments that an official-layout state dict was made
    with: ``arch`` (a dict), ``window_size``, and, when the classifier parts
    are present, ``neck_dims`` and ``num_classes``.

    Raises:
        KeyError: the state dict is not a LightViT one.
    """
    if 'global_token' not in state_dict or 'stages.0.0.attn.qkv.weight' not in state_dict:
        raise KeyError('not a LightViT state dict: no global_token or '
                       f'stages.0.0.attn.qkv.weight among {list(state_dict)[:5]}...')
    stages = sorted({int(k.split('.')[1]) for k in state_dict if k.startswith('stages.')})
    arch = dict(embed_dims=[], depths=[], num_heads=[], mlp_ratios=[],
                num_tokens=state_dict['global_token'].shape[1])
    for i in stages:
        first = 1 if i > 0 else 0  # stages i > 0 start with the patch merging
        blocks = {int(k.split('.')[2]) for k in state_dict
                  if k.startswith(f'stages.{i}.') and '.attn.qkv.' in k}
        prefix = f'stages.{i}.{first}.'
        dims = state_dict[prefix + 'norm1.weight'].shape[0]
        arch['embed_dims'].append(dims)
        arch['depths'].append(len(blocks))
        arch['num_heads'].append(state_dict[prefix + 'attn.relative_position_bias_table'].shape[1])
        arch['mlp_ratios'].append(state_dict[prefix + 'mlp.fc1.weight'].shape[0] / dims)
    table = state_dict['stages.0.0.attn.relative_position_bias_table'].shape[0]
    info = dict(arch=arch, window_size=(int(round(table**0.5)) + 1) // 2)
    if 'head.weight' in state_dict:
        info.update(num_classes=state_dict['head.weight'].shape[0],
                    neck_dims=state_dict['head.weight'].shape[1])
    return info


def other_token_count(tokens: Optional[torch.Tensor], own: torch.Tensor) -> bool:
    """Whether ``tokens`` (a state dict's ``global_token``, or None) are
    global tokens of the model's width C but another count T: both (1, T, C)."""
    return (tokens is not None and tokens.dim() == 3 and tokens.shape[2] == own.shape[2]
            and tokens.shape[1] != own.shape[1])


def tile_global_tokens(tokens: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """The global tokens ``tokens`` (1, T, C) repeated along the tokens and cut
    at the end to ``num_tokens`` (1, num_tokens, C): token i is ``tokens[:, i % T]``.

    A whole multiple k * T nearly keeps the network's function (attention over
    k identical copies equals attention over one; only the FFN's mean over
    all tokens sees the copies); a partial last copy weighs its tokens more
    and changes it (docs/official_weights.md, measured)."""
    repeats = -(-num_tokens // tokens.shape[1])
    return tokens.repeat(1, repeats, 1)[:, :num_tokens]


def tile_global_tokens_pre_hook(module, state_dict, prefix, *args) -> None:
    """Load-state-dict pre-hook of ``LightViT`` (registered in its constructor,
    as mmpretrain's ``SwinTransformer`` adapts its relative position tables):
    a ``global_token`` (1, T, C) of the model's width C whose count T differs
    from the model's ``num_tokens`` is tiled to it (:func:`tile_global_tokens`)
    when ``num_tokens`` is a whole multiple of T, the one case that nearly
    keeps the network's function. It serves every load path:
    ``load_state_dict``, mmengine's ``load_checkpoint``, a Runner's
    ``load_from`` and the ``Pretrained`` init_cfg.

    Args:
        module (LightViT): The backbone being loaded.
        state_dict (dict): The state dict being loaded (modified in place).
        prefix (str): The backbone's prefix in it (e.g. ``'backbone.'``).
        *args: The other arguments torch passes (unused).

    Raises:
        ValueError: another count that ``num_tokens`` is not a whole multiple
            of (a partial copy, or fewer tokens than the checkpoint's); the
            message names both counts and what to do.
    """
    key = prefix + 'global_token'
    tokens = state_dict.get(key)
    if not other_token_count(tokens, module.global_token):
        return
    if module.num_tokens % tokens.shape[1]:
        raise ValueError(
            f'{key} has {tokens.shape[1]} global tokens {tuple(tokens.shape)}, the model '
            f'{module.num_tokens} {tuple(module.global_token.shape)}, not a whole multiple '
            f'of {tokens.shape[1]}: build the model with num_tokens={tokens.shape[1]} (or a '
            "multiple of it), or load through init_cfg=dict(type='Pretrained', "
            "checkpoint=..., global_token_init='repeat') (tile the checkpoint's tokens, the "
            "last copy cut) or global_token_init='zeros' (start from zero tokens)")
    state_dict[key] = tile_global_tokens(tokens, module.num_tokens)
    print_log(f"{key}: the checkpoint's {tokens.shape[1]} tokens tiled "
              f'{module.num_tokens // tokens.shape[1]} times, the model has {module.num_tokens}',
              logger='current')


def load_lightvit_weights(model,
                          checkpoint: str,
                          prefix: Optional[str] = None,
                          checkpoint_key: str = 'model',
                          global_token_init: str = 'strict',
                          weights_only: bool = True,
                          map_location='cpu') -> Dict[str, list]:
    """Load the weights of a ``LightViT`` backbone from an official or
    OpenMMLab checkpoint (``LightViT.load_pretrained`` and its
    ``init_cfg=dict(type='Pretrained', ...)`` call this).

    Accepts a raw state dict, ``{'state_dict': ...}``, the official
    training format ``{'model', 'ema_model', ...}``, and checkpoints of
    whole mmdet/mmseg/mmpretrain models (``backbone.`` prefix) or of
    wrapped models (``module.``). The official classifier's ``norm``,
    ``neck`` and ``head`` are skipped quietly; every other difference is
    logged, and a checkpoint that matches nothing fails.

    Args:
        model (LightViT): The backbone to load into.
        checkpoint (str): Path or URL of the checkpoint.
        prefix (str, optional): Load only the keys under this prefix
            (e.g. ``'backbone.'``); None takes ``backbone.`` when present.
        checkpoint_key (str): ``'model'`` or ``'ema_model'`` for official
            training checkpoints. Defaults to ``'model'``.
        global_token_init (str): What to do when the checkpoint has another
            number of global tokens than the model: ``'strict'`` fails,
            ``'repeat'`` tiles the checkpoint's tokens to the model's
            count (:func:`tile_global_tokens`: the last copy may be cut,
            whereas the other load paths tile whole multiples only, see
            :func:`tile_global_tokens_pre_hook`).
            ``'zeros'`` drops the checkpoint's tokens and sets the model's
            to zero: what the released official detection LightViT-T
            (``num_tokens=512``, github.com/hunto/LightViT
            ``detection/lightvit.py``) gets in effect, since mmcv's
            non-strict load skips the mismatched tensor and the model
            builds its tokens with ``torch.zeros``. Defaults to ``'strict'``.
        weights_only (bool): Refuse pickled objects other than tensors and
            mmengine's own. Defaults to True.
        map_location (str): Where tensors are loaded. Defaults to 'cpu'.

    Returns:
        dict: the names ``loaded``, ``missing`` (model keys not in the
        checkpoint), ``unexpected`` (checkpoint keys not in the model)
        and ``ignored`` (classifier parts).

    Raises:
        FileNotFoundError: the file does not exist.
        KeyError: no checkpoint key matches the backbone.
        ValueError: a tensor's shape differs from the model's, or the
            global-token count differs under ``'strict'``.
    """
    if global_token_init not in ('strict', 'repeat', 'zeros'):
        raise ValueError(f"global_token_init must be 'strict', 'repeat' or 'zeros', "
                         f'got {global_token_init!r}')
    raw = load_checkpoint_file(checkpoint, map_location, weights_only)
    state_dict, source = extract_state_dict(raw, checkpoint_key)
    state_dict = strip_prefixes(state_dict, prefix)
    own = model.state_dict()
    ignored = [k for k in state_dict
               if k not in own and k.split('.')[0] in CLASSIFIER_PARTS]
    state_dict = {k: v for k, v in state_dict.items() if k not in ignored}
    loaded = [k for k in state_dict if k in own]
    if not loaded:
        raise KeyError(
            f'no key of {checkpoint} (state dict from {source}, first keys '
            f'{list(state_dict)[:5]}) matches the LightViT backbone (e.g. '
            f"{list(own)[:3]}). Is it a LightViT checkpoint? Set init_cfg's "
            "prefix to the backbone's prefix, if it has one.")
    tokens, own_tokens = state_dict.get('global_token'), own['global_token']
    if other_token_count(tokens, own_tokens):
        if global_token_init == 'strict':
            raise ValueError(
                f'{checkpoint} has {tokens.shape[1]} global tokens '
                f'{tuple(tokens.shape)}, the model {model.num_tokens} '
                f'{tuple(own_tokens.shape)}: build the model with '
                f'num_tokens={tokens.shape[1]}, or add '
                "global_token_init='repeat' (tile the checkpoint's tokens) or "
                "'zeros' (start from zero tokens) to the Pretrained init_cfg")
        if global_token_init == 'repeat':
            state_dict['global_token'] = tile_global_tokens(tokens, model.num_tokens)
            action = 'tiled'
        else:
            state_dict['global_token'] = torch.zeros_like(own_tokens)
            action = 'replaced by zeros'
        print_log(f"global_token: the checkpoint's {tokens.shape[1]} tokens {action}, "
                  f'the model has {model.num_tokens}', logger='current')
    mismatched = [f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}'
                  for k, v in state_dict.items() if k in own and v.shape != own[k].shape]
    if mismatched:
        raise ValueError(f'shapes in {checkpoint} differ from the model: '
                         + '; '.join(mismatched))
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    model.load_state_dict(state_dict, strict=False)
    print_log(f'LightViT: loaded {len(loaded)}/{len(own)} tensors from {checkpoint} '
              f'({source}); skipped {len(ignored)} classifier keys; missing: '
              f'{missing or "none"}; unexpected: {unexpected or "none"}',
              logger='current',
              level=logging.WARNING if unexpected or any(
                  not k.startswith('norm') for k in missing) else logging.INFO)
    return dict(loaded=loaded, missing=missing, unexpected=unexpected, ignored=ignored)

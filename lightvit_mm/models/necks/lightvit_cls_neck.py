# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""The token-wise pre-logits of the official LightViT classifier."""
from typing import Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.model import BaseModule


class LightViTClsNeck(BaseModule):
    """Pre-logits of the LightViT classifier, to put before a linear head.

    LayerNorm (eps 1e-6) over all tokens, a token-wise Linear(C -> D) +
    LayerNorm (eps 1e-5) + GELU, then the mean over **all** tokens, the global
    tokens included. Followed by mmpretrain's ``LinearClsHead(in_channels=D)``
    it equals the official classifier (github.com/hunto/image_classification_sota,
    ``lib/models/lightvit.py``: ``norm``, ``neck``, ``head``; official keys
    ``norm.*`` -> ``neck.norm.*``, ``neck.*`` -> ``neck.proj.*``, ``head.*`` ->
    ``head.fc.*``). It is a neck rather than a head so that any mmpretrain
    head (and its losses) can follow it.

    Args:
        in_channels (int): Token width C of the backbone's last stage.
        out_channels (int): Width D of the pre-logits. Defaults to 1280.
        init_cfg (dict | list[dict]): Defaults to truncated-normal Linear
            (std 0.02) and unit LayerNorms, as the official model.

    Shapes:
        input: a tuple whose last entry holds tokens (B, N, C), as
        ``LightViT(out_type='raw')`` gives; output: a tuple of one (B, D).
    """

    def __init__(self, in_channels: int, out_channels: int = 1280, init_cfg=None):
        if init_cfg is None:
            init_cfg = [dict(type='TruncNormal', layer='Linear', std=.02, bias=0.),
                        dict(type='Constant', layer='LayerNorm', val=1., bias=0.)]
        super().__init__(init_cfg)
        self.norm = nn.LayerNorm(in_channels, eps=1e-6)
        self.proj = nn.Sequential(
            nn.Linear(in_channels, out_channels), nn.LayerNorm(out_channels), nn.GELU())

    def forward(self, inputs: Sequence[torch.Tensor]) -> Tuple[torch.Tensor]:
        tokens = inputs[-1]
        if tokens.dim() != 3:
            raise ValueError('LightViTClsNeck expects tokens (B, N, C) from '
                             "LightViT(out_type='raw'), got a tensor of shape "
                             f'{tuple(tokens.shape)}')
        return (self.proj(self.norm(tokens)).mean(dim=1), )

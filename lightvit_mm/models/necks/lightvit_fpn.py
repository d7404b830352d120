# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""FPN for the 3-stage LightViT (official ``detection/lightvit_fpn.py``)."""
from typing import List, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmengine.model import BaseModule


class LightViTFPN(BaseModule):
    """Feature pyramid for LightViT with extra finer levels by transposed conv.

    A standard top-down FPN (Lin et al. 2017) over the backbone levels, plus
    ``num_extra_trans_convs`` finer levels: each is a 2x2 stride-2 transposed
    conv on the next coarser top-down lateral (starting from the finest one),
    followed by a 3x3 output conv. Coarser extra levels come from max-pooling
    (``add_extra_convs=False``) or stride-2 3x3 convs, as in mmdet's ``FPN``.
    With LightViT's strides 8, 16, 32 and the paper's setting
    (``num_outs=5, num_extra_trans_convs=1``) the outputs have strides
    4, 8, 16, 32, 64, what mmdet's Mask R-CNN heads expect.

    Source: github.com/hunto/LightViT, ``detection/lightvit_fpn.py``; unlike
    the official neck, ``num_extra_trans_convs=0`` works (a plain FPN).

    Args:
        in_channels (Sequence[int]): Channels of each input level.
        out_channels (int): Channels of every output level.
        num_outs (int): Number of output levels, at least
            ``len(in_channels) + num_extra_trans_convs``.
        num_extra_trans_convs (int): Finer levels added by transposed convs.
            Defaults to 1.
        add_extra_convs (bool | str): How coarser extra levels are made:
            False (max-pool), or ``'on_input'``, ``'on_lateral'``,
            ``'on_output'`` (stride-2 convs on that source; True means
            ``'on_input'``). Defaults to False.
        relu_before_extra_convs (bool): ReLU before the 2nd and later extra
            convs. Defaults to False.
        conv_cfg (dict, optional): Config of the 3x3/1x1 convs.
        norm_cfg (dict, optional): Norm layer config. Defaults to None.
        act_cfg (dict, optional): Activation config. Defaults to None.
        upsample_cfg (dict): ``F.interpolate`` arguments of the top-down path.
            Defaults to ``dict(mode='nearest')``.
        init_cfg (dict | list[dict]): Defaults to Xavier-uniform Conv2d
            weights (zero bias); the transposed convs keep ConvModule's
            Kaiming init (fan_out, normal), as in the official neck
            (``LightViTFPN.init_weights`` and ``TransposedConvModule``).
            The conv lists are plain ``torch.nn.ModuleList`` s, as in
            mmdet's ``FPN``: an mmengine ``ModuleList`` would make
            ``init_weights`` recurse into each ``ConvModule`` and redo its
            Kaiming init over the Xavier one.

    Raises:
        ValueError: ``num_outs`` too small, or an unknown ``add_extra_convs``.

    Shapes:
        input: a sequence of ``len(in_channels)`` maps (B, in_channels[i],
        H_i, W_i), each level half the size of the previous one; output: a
        tuple of ``num_outs`` maps (B, out_channels, H'_j, W'_j), finest
        first, the first ``num_extra_trans_convs`` of size 2^k * (H_0, W_0).

    Examples:
        >>> import torch
        >>> neck = LightViTFPN([64, 128, 256], 256, num_outs=5)
        >>> feats = [torch.rand(1, c, 64 // 2**i, 64 // 2**i)
        ...          for i, c in enumerate([64, 128, 256])]
        >>> [tuple(o.shape[2:]) for o in neck(feats)]
        [(128, 128), (64, 64), (32, 32), (16, 16), (8, 8)]
    """

    def __init__(self,
                 in_channels: Sequence[int],
                 out_channels: int,
                 num_outs: int,
                 num_extra_trans_convs: int = 1,
                 add_extra_convs: Union[bool, str] = False,
                 relu_before_extra_convs: bool = False,
                 conv_cfg=None,
                 norm_cfg=None,
                 act_cfg=None,
                 upsample_cfg=dict(mode='nearest'),
                 init_cfg=dict(type='Xavier', layer='Conv2d', distribution='uniform')):
        super().__init__(init_cfg)
        self.in_channels = list(in_channels)
        self.num_ins = len(self.in_channels)
        self.num_outs = num_outs
        self.num_extra_trans_convs = num_extra_trans_convs
        self.relu_before_extra_convs = relu_before_extra_convs
        self.upsample_cfg = upsample_cfg.copy()
        if num_extra_trans_convs < 0 or num_outs < self.num_ins + num_extra_trans_convs:
            raise ValueError(
                f'num_outs ({num_outs}) must be at least len(in_channels) '
                f'({self.num_ins}) + num_extra_trans_convs ({num_extra_trans_convs}), '
                'with num_extra_trans_convs >= 0')
        if add_extra_convs is True:
            add_extra_convs = 'on_input'
        if add_extra_convs not in (False, 'on_input', 'on_lateral', 'on_output'):
            raise ValueError(f'add_extra_convs must be a bool or one of '
                             f"'on_input', 'on_lateral', 'on_output', got {add_extra_convs!r}")
        self.add_extra_convs = add_extra_convs

        def conv(in_c, kernel, stride=1, padding=None, cfg=conv_cfg):
            return ConvModule(in_c, out_channels, kernel, stride=stride,
                              padding=(kernel - 1) // 2 if padding is None else padding,
                              conv_cfg=cfg, norm_cfg=norm_cfg, act_cfg=act_cfg,
                              inplace=False)

        self.lateral_convs = nn.ModuleList(conv(c, 1) for c in self.in_channels)
        self.fpn_convs = nn.ModuleList(conv(out_channels, 3) for _ in self.in_channels)
        num_coarse = num_outs - self.num_ins - num_extra_trans_convs
        if add_extra_convs:
            for i in range(num_coarse):
                in_c = (self.in_channels[-1] if i == 0 and add_extra_convs == 'on_input'
                        else out_channels)
                self.fpn_convs.append(conv(in_c, 3, stride=2))
        self.extra_trans_convs = nn.ModuleList(
            conv(out_channels, 2, stride=2, padding=0, cfg=dict(type='deconv'))
            for _ in range(num_extra_trans_convs))
        self.extra_fpn_convs = nn.ModuleList(
            conv(out_channels, 3) for _ in range(num_extra_trans_convs))

    def forward(self, inputs: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
        if len(inputs) != self.num_ins:
            raise ValueError(f'LightViTFPN expects {self.num_ins} input levels '
                             f'(in_channels={self.in_channels}), got {len(inputs)}')
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, inputs)]
        for i in range(self.num_ins - 1, 0, -1):
            if 'scale_factor' in self.upsample_cfg:
                up = F.interpolate(laterals[i], **self.upsample_cfg)
            else:
                up = F.interpolate(laterals[i], size=laterals[i - 1].shape[2:],
                                   **self.upsample_cfg)
            laterals[i - 1] = laterals[i - 1] + up

        finer: List[torch.Tensor] = []
        source = laterals[0]
        for trans_conv in self.extra_trans_convs:
            source = trans_conv(source)
            finer.insert(0, source)
        outs = [fpn_conv(x) for fpn_conv, x in zip(self.extra_fpn_convs, finer)]
        outs += [self.fpn_convs[i](laterals[i]) for i in range(self.num_ins)]

        num_coarse = self.num_outs - len(outs)
        if num_coarse and not self.add_extra_convs:
            for _ in range(num_coarse):
                outs.append(F.max_pool2d(outs[-1], 1, stride=2))
        elif num_coarse:
            source = {'on_input': inputs[-1], 'on_lateral': laterals[-1],
                      'on_output': outs[-1]}[self.add_extra_convs]
            for i in range(self.num_ins, self.num_ins + num_coarse):
                if i > self.num_ins and self.relu_before_extra_convs:
                    source = F.relu(source)
                source = self.fpn_convs[i](source)
                outs.append(source)
        return tuple(outs)

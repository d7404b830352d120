# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""LightViT backbone (Huang et al. 2022, https://arxiv.org/abs/2207.05557).

Module and parameter names follow the official implementation
(github.com/hunto/LightViT, ``detection/lightvit.py``, and
github.com/hunto/image_classification_sota, ``lib/models/lightvit.py``) so
that the official checkpoints load without renaming.
"""
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmengine.model import BaseModule, ModuleList
from mmengine.model.weight_init import trunc_normal_
from torch.nn.modules.batchnorm import _BatchNorm

from lightvit_mm.models.backbones.lightvit_weights import (
    load_lightvit_weights,
    tile_global_tokens_pre_hook,
)
from lightvit_mm.models.utils.window_attention import (
    WindowAttentionWithBias,
    relative_position_index,
)


class ConvStem(BaseModule):
    """Convolutional stem of LightViT: stride-8 patch embedding (paper Sec. 3.1).

    ``stem``: conv3x3 s2 (in -> C/2, no bias) + BN + GELU, then three
    depthwise conv3x3 (strides 1, 1, 2) each + BN + GELU; ``proj``: conv3x3 s2
    (C/2 -> C, with bias); ``norm``: LayerNorm over the flattened tokens.

    Args:
        in_channels (int): Channels of the input image. Defaults to 3.
        embed_dims (int): Token width C of the first stage.
        deploy (bool): Build the structure of :meth:`switch_to_deploy`
            directly: convolutions with bias and ``nn.Identity`` in place of
            the BatchNorms. Defaults to False.
        init_cfg (dict, optional): Initialization config. Defaults to None.

    Shapes:
        input: (B, in_channels, H, W); output: tokens (B, H' * W', C) and the
        token grid size (H', W') with H' = ceil(ceil(ceil(H / 2) / 2) / 2).
    """

    def __init__(self, in_channels: int = 3, embed_dims: int = 64, deploy: bool = False,
                 init_cfg=None):
        super().__init__(init_cfg)
        stem_dims = embed_dims // 2
        layers = [
            nn.Conv2d(in_channels, stem_dims, 3, stride=2, padding=1, bias=deploy),
            nn.Identity() if deploy else nn.BatchNorm2d(stem_dims),
            nn.GELU(),
        ]
        for stride in (1, 1, 2):
            layers += [
                nn.Conv2d(stem_dims, stem_dims, 3, stride=stride, padding=1,
                          groups=stem_dims, bias=deploy),
                nn.Identity() if deploy else nn.BatchNorm2d(stem_dims),
                nn.GELU(),
            ]
        self.stem = nn.Sequential(*layers)
        self.proj = nn.Conv2d(stem_dims, embed_dims, 3, stride=2, padding=1)
        self.norm = nn.LayerNorm(embed_dims)

    def switch_to_deploy(self):
        """Fold each BatchNorm of ``stem`` into the convolution before it (the
        running statistics and affine become the convolution's weight scale
        and bias; the BatchNorm becomes ``nn.Identity``)."""
        for i, module in enumerate(self.stem):
            if not isinstance(module, nn.BatchNorm2d):
                continue
            conv = self.stem[i - 1]
            scale = module.weight / torch.sqrt(module.running_var + module.eps)
            fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size,
                              conv.stride, conv.padding, groups=conv.groups, bias=True)
            with torch.no_grad():
                fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
                fused.bias.copy_(module.bias - module.running_mean * scale)
            self.stem[i - 1], self.stem[i] = fused.to(conv.weight.device), nn.Identity()

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        # channels_last: the depthwise convolutions run about twice as fast on
        # the CPU, and the tokens below are a view instead of a copy. Not
        # while torch.export traces: the memory layout means nothing to the
        # exported graph, and torch's convolution picks its layout from the
        # batch size there (a guard that would refuse a batch of 1).
        if not torch.compiler.is_exporting():
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.proj(self.stem(x))
        H, W = x.shape[2:]
        return self.norm(x.flatten(2).transpose(1, 2)), (H, W)


def copy_as(x: torch.Tensor, *shape: int) -> torch.Tensor:
    """``x`` copied into a new contiguous tensor of ``shape`` (``-1`` allowed).

    Same values as ``x.reshape(*shape)``, but always a copy: ``reshape``
    returns a view where the strides allow one, and whether they do depends
    on the sizes (a window count or a crop that happens to be 1 or complete),
    a decision that ``torch.export`` records as a guard on the input size,
    so the exported program would not accept every height and width.
    """
    return x.clone(memory_format=torch.contiguous_format).view(*shape)


class LightViTAttention(BaseModule):
    """LightViT attention: local window attention plus global aggregation and
    global broadcast through learnable global tokens (paper Sec. 3.2).

    One ``qkv`` projection serves the global tokens and the image tokens. The
    image tokens attend within non-overlapping ``window_size`` windows with a
    relative position bias; the global tokens aggregate all image tokens; the
    aggregated tokens are projected by ``kv_global`` into keys and values that
    every image token attends to (broadcast), and the result is added to the
    local output. ``proj`` projects [global, image] tokens.

    As in the official detection code, image grids whose sides are not
    multiples of ``window_size`` are zero-padded (bottom/right) before the
    ``qkv`` projection; the padded tokens take part, unmasked, as keys and
    values of the window attention, and are masked out of the aggregation.
    The padding is computed without a Python ``if`` on the grid size: every
    grid is padded by ``ceil(H / ws) * ws - H`` rows (0 where none are
    needed), masked and cropped, so that ``torch.export`` captures one graph
    for all sizes (dynamic height and width).

    Fast path (same outputs as the official code, to float rounding): the
    image tokens are reordered window by window once, before ``qkv``, and all
    three attentions run as ``F.scaled_dot_product_attention`` on strided
    views of that one ``qkv`` output (aggregation and broadcast do not depend
    on token order); only the sum of local and broadcast outputs returns to
    raster order. The official code instead permutes q, k and v into
    windows and back, crops them for the global attentions and computes each
    attention as explicit matrix products.

    The paper's three steps are :meth:`forward_local`,
    :meth:`forward_global_aggregation` and :meth:`forward_global_broadcast`
    (the official code's names), each over views of that ``qkv`` output.

    Args:
        embed_dims (int): Token width C.
        num_heads (int): Number of heads; must divide ``embed_dims``.
        num_tokens (int): Number of global tokens T.
        window_size (int): Side of the local windows. Defaults to 7.
        qkv_bias (bool): Bias in ``qkv`` and ``kv_global``. Defaults to True.
        deploy (bool): Build the structure of :meth:`switch_to_deploy`
            directly: the buffer ``position_bias`` in place of the bias table
            and its index. Defaults to False.
        init_cfg (dict, optional): Initialization config. Defaults to None.

    Shapes:
        input: (B, T + H * W, C) with the global tokens first, and the grid
        size (H, W); output: same shape as the input.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 num_tokens: int,
                 window_size: int = 7,
                 qkv_bias: bool = True,
                 deploy: bool = False,
                 init_cfg=None):
        super().__init__(init_cfg)
        self.num_heads = num_heads
        self.head_dims = embed_dims // num_heads
        self.num_tokens = num_tokens
        self.window_size = window_size
        self.qkv = nn.Linear(embed_dims, embed_dims * 3, bias=qkv_bias)
        self.kv_global = nn.Linear(embed_dims, embed_dims * 2, bias=qkv_bias)
        self.proj = nn.Linear(embed_dims, embed_dims)
        if deploy:  # what switch_to_deploy leaves
            area = window_size**2
            self.register_buffer('position_bias', torch.zeros(1, num_heads, area, area))
        else:
            self.relative_position_bias_table = nn.Parameter(
                torch.zeros((2 * window_size - 1)**2, num_heads))
            self.register_buffer('relative_position_index',
                                 relative_position_index(window_size))

    def init_weights(self):
        super().init_weights()
        if hasattr(self, 'relative_position_bias_table'):  # none after switch_to_deploy
            trunc_normal_(self.relative_position_bias_table, std=.02)

    def switch_to_deploy(self):
        """Compute the relative position bias once and keep it as the buffer
        ``position_bias``, in place of the table and the index."""
        bias = self._position_bias().detach().contiguous()
        del self.relative_position_bias_table, self.relative_position_index
        self.register_buffer('position_bias', bias)

    def _position_bias(self) -> torch.Tensor:
        """Relative position bias of shape (1, heads, ws^2, ws^2), contiguous:
        4-D, as torch's fused CPU attention kernel takes it (a 3-D mask falls
        back to the unfused path, about half as fast), and with unit stride
        in the last dimension, which every fused CUDA kernel requires (a
        permuted view sends the window attention to the unfused math path)."""
        if hasattr(self, 'position_bias'):  # after switch_to_deploy
            return self.position_bias
        area = self.window_size**2
        bias = self.relative_position_bias_table[self.relative_position_index]
        return bias.view(area, area, -1).permute(2, 0, 1).unsqueeze(0).contiguous()

    def forward(self, x: torch.Tensor, hw_shape: Tuple[int, int]) -> torch.Tensor:
        B, _, C = x.shape
        T, ws, nh, hd = self.num_tokens, self.window_size, self.num_heads, self.head_dims
        H, W = hw_shape
        # Windows per side, ceil(H / ws); the grid is padded to nWh * ws rows,
        # by zero rows where H is a multiple already (no branch on the size).
        nWh, nWw = (H + ws - 1) // ws, (W + ws - 1) // ws

        # The image tokens are put in window order once, before ``qkv`` (C
        # channels rather than 3C); every attention below reads that layout,
        # and only the summed image output returns to raster order at the end.
        x_img = F.pad(x[:, T:].view(B, H, W, C), (0, 0, 0, nWw * ws - W, 0, nWh * ws - H))
        x_img = self._window_order(x_img)
        x_glb = copy_as(x[:, :T], B, T, C)  # a contiguous input for the Linear
        q_glb = self.qkv(x_glb).view(B, T, 3, nh, hd)[:, :, 0].transpose(1, 2)
        qkv = self.qkv(x_img).view(B, -1, 3, nh, hd)  # (B, L, 3, nh, hd), window order

        local = self.forward_local(qkv)
        q_img, k_img, v_img = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, nh, L, hd)
        x_glb = self.forward_global_aggregation(q_glb, k_img, v_img, hw_shape)
        broadcast = self.forward_global_broadcast(q_img, x_glb)
        # At most 6-D tensors: OpenVINO's CPU plugin (2026.4) computes this sum
        # wrongly when written on 7-D views (B, nWh, nWw, nh, ws, ws, hd) of
        # dynamically shaped inputs (docs/deployment.md).
        x_img = (local.view(B, nWh * nWw, nh, ws * ws, hd)
                 + broadcast.view(B, nh, nWh * nWw, ws * ws, hd).transpose(1, 2))
        x_img = x_img.view(B * nWh, nWw, nh, ws, ws, hd).permute(0, 3, 1, 4, 2, 5)
        # (B * nWh, ws, nWw, ws, nh, hd): raster order, then crop the padding
        x_img = copy_as(x_img, B, nWh * ws, nWw * ws, C)[:, :H, :W]
        return self.proj(torch.cat([x_glb, copy_as(x_img, B, H * W, C)], dim=1))

    def forward_local(self, qkv: torch.Tensor) -> torch.Tensor:
        """Step 1, local window attention: the image tokens attend within their
        window, the relative position bias as additive mask.

        Shapes:
            qkv: (B, L, 3, heads, d), image tokens in window order (L =
            nW * ws^2); output: (B * nW, heads, ws^2, d).
        """
        ws, nh, hd = self.window_size, self.num_heads, self.head_dims
        q, k, v = qkv.view(-1, ws * ws, 3, nh, hd).permute(2, 0, 3, 1, 4).unbind(0)
        bias = self._position_bias()
        if torch.is_grad_enabled() and not torch.jit.is_tracing():
            return WindowAttentionWithBias.apply(q, k, v, bias)
        # torch's fused kernel, which has no gradient for the bias. Masks
        # expanded to the full batch (a free view): with a batch-1 mask the
        # kernel would check whether the batch is 1, a guard on the input
        # size under torch.export.
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias.expand(q.shape[0], -1, -1, -1))

    def forward_global_aggregation(self, q_glb: torch.Tensor, k_img: torch.Tensor,
                                   v_img: torch.Tensor,
                                   hw_shape: Tuple[int, int]) -> torch.Tensor:
        """Step 2, global aggregation: the global-token queries attend over all
        image tokens (their order does not matter), the padding masked out.

        Shapes:
            q_glb: (B, heads, T, d); k_img, v_img: (B, heads, L, d), window
            order on the padded grid of ``hw_shape`` (H, W); output: the
            aggregated global tokens (B, T, C).
        """
        B, nh, T, _ = q_glb.shape
        ws = self.window_size
        H, W = hw_shape
        # As an additive float mask: a boolean one makes the kernel build a
        # float copy of the expanded (B, heads, T, L) mask on every call.
        valid = self._valid_tokens(H, W, (H + ws - 1) // ws, (W + ws - 1) // ws, q_glb.device)
        mask = torch.zeros(valid.shape, dtype=q_glb.dtype, device=q_glb.device).masked_fill(
            ~valid, float('-inf')).expand(B, nh, T, -1)
        x_glb = F.scaled_dot_product_attention(q_glb, k_img, v_img, attn_mask=mask)
        return x_glb.transpose(1, 2).reshape(B, T, nh * self.head_dims)

    def forward_global_broadcast(self, q_img: torch.Tensor, x_glb: torch.Tensor) -> torch.Tensor:
        """Step 3, global broadcast: the image queries attend over the keys and
        values that ``kv_global`` projects from the aggregated global tokens.

        Shapes:
            q_img: (B, heads, L, d); x_glb: (B, T, C); output: (B, heads, L, d).
        """
        B, T, _ = x_glb.shape
        nh, hd = self.num_heads, self.head_dims
        k_glb, v_glb = self.kv_global(x_glb).view(B, T, 2, nh, hd).permute(
            2, 0, 3, 1, 4).unbind(0)
        return F.scaled_dot_product_attention(q_img, k_glb, v_glb)

    def _window_order(self, x: torch.Tensor) -> torch.Tensor:
        """(N, Hp, Wp, C) grid, sides multiples of ``window_size`` -> (N, L, C)
        tokens window by window (row-major windows, row-major inside)."""
        N, Hp, Wp, C = x.shape
        ws = self.window_size
        return copy_as(x.view(N, Hp // ws, ws, Wp // ws, ws, C).transpose(2, 3), N, -1, C)

    def _valid_tokens(self, H: int, W: int, nWh: int, nWw: int,
                      device: torch.device) -> torch.Tensor:
        """Boolean mask (1, 1, 1, L) of the real (not padding) tokens in window order."""
        ws = self.window_size
        rows = torch.arange(nWh * ws, device=device) < H  # comparisons, not slicing:
        cols = torch.arange(nWw * ws, device=device) < W  # ONNX tracing keeps them dynamic
        valid = rows[None, :, None, None] & cols[None, None, :, None]  # (1, Hp, Wp, 1)
        return self._window_order(valid).view(1, 1, 1, -1)


class BiAttn(BaseModule):
    """Bi-dimensional attention of the LightViT FFN (paper Sec. 3.3).

    A channel gate from the mean token and a spatial gate per token from
    [local reduce, global reduce], both sigmoid, multiply the input.

    Args:
        embed_dims (int): Token width C.
        reduce_ratio (float): Width of the reductions relative to C.
            Defaults to 0.25.
        init_cfg (dict, optional): Initialization config. Defaults to None.

    Shapes:
        input and output: (B, N, C).
    """

    def __init__(self, embed_dims: int, reduce_ratio: float = 0.25, init_cfg=None):
        super().__init__(init_cfg)
        reduce_dims = int(embed_dims * reduce_ratio)
        self.norm = nn.LayerNorm(embed_dims)
        self.global_reduce = nn.Linear(embed_dims, reduce_dims)
        self.local_reduce = nn.Linear(embed_dims, reduce_dims)
        self.channel_select = nn.Linear(reduce_dims, embed_dims)
        self.spatial_select = nn.Linear(reduce_dims * 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(x)
        y_glb = F.gelu(self.global_reduce(y.mean(1, keepdim=True)))  # (B, 1, C/4)
        y_loc = F.gelu(self.local_reduce(y))  # (B, N, C/4)
        channel_gate = torch.sigmoid(self.channel_select(y_glb))  # (B, 1, C)
        # spatial_select([y_loc, y_glb]) without materialising the concatenation.
        w_loc, w_glb = self.spatial_select.weight.split(y_loc.shape[-1], dim=1)
        spatial_gate = torch.sigmoid(  # (B, N, 1)
            F.linear(y_loc, w_loc) + F.linear(y_glb, w_glb, self.spatial_select.bias))
        return x * (channel_gate * spatial_gate)


class BiAttnMlp(BaseModule):
    """LightViT FFN: fc1 -> GELU -> fc2 -> bi-dimensional attention.

    Args:
        embed_dims (int): Token width C.
        hidden_dims (int): Hidden width of the FFN.
        init_cfg (dict, optional): Initialization config. Defaults to None.

    Shapes:
        input and output: (B, N, C).
    """

    def __init__(self, embed_dims: int, hidden_dims: int, init_cfg=None):
        super().__init__(init_cfg)
        self.fc1 = nn.Linear(embed_dims, hidden_dims)
        self.fc2 = nn.Linear(hidden_dims, embed_dims)
        self.attn = BiAttn(embed_dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(self.fc2(F.gelu(self.fc1(x))))


class LightViTBlock(BaseModule):
    """Pre-norm LightViT block: attention and FFN, each with drop-path.

    Args:
        embed_dims (int): Token width C.
        num_heads (int): Number of attention heads.
        num_tokens (int): Number of global tokens T.
        mlp_ratio (float): FFN hidden width relative to C.
        window_size (int): Side of the local windows. Defaults to 7.
        qkv_bias (bool): Bias in the qkv projections. Defaults to True.
        drop_path (float): Stochastic depth rate: the probability that a
            sample's attention or FFN branch is dropped in training, kept as
            ``drop_prob``. Defaults to 0.
        drop_global_tokens (bool): Drop the global tokens after the attention,
            as the official detection code does in the very last block.
            Defaults to False.
        with_cp (bool): Gradient checkpointing. Defaults to False.
        deploy (bool): Deploy-mode attention (:class:`LightViTAttention`).
            Defaults to False.
        init_cfg (dict, optional): Initialization config. Defaults to None.

    Shapes:
        input: (B, T + H * W, C) and (H, W); output: the same, or
        (B, H * W, C) when ``drop_global_tokens``.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 num_tokens: int,
                 mlp_ratio: float,
                 window_size: int = 7,
                 qkv_bias: bool = True,
                 drop_path: float = 0.,
                 drop_global_tokens: bool = False,
                 with_cp: bool = False,
                 deploy: bool = False,
                 init_cfg=None):
        super().__init__(init_cfg)
        self.num_tokens = num_tokens
        self.drop_global_tokens = drop_global_tokens
        self.with_cp = with_cp
        self.norm1 = nn.LayerNorm(embed_dims, eps=1e-6)
        self.attn = LightViTAttention(embed_dims, num_heads, num_tokens,
                                      window_size, qkv_bias, deploy)
        self.norm2 = nn.LayerNorm(embed_dims, eps=1e-6)
        self.mlp = BiAttnMlp(embed_dims, int(embed_dims * mlp_ratio))
        self.drop_prob = drop_path

    def _residual(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``x + DropPath(self.drop_prob)(y)`` in one pass over the tokens: the
        per-sample keep mask of mmcv's ``DropPath`` (same random draw), divided
        by the keep probability, multiplies ``y`` inside ``torch.addcmul``."""
        if not self.training or self.drop_prob == 0.:
            return x + y
        keep_prob = 1 - self.drop_prob
        mask = keep_prob + torch.rand((y.shape[0], ) + (1, ) * (y.dim() - 1),
                                      dtype=y.dtype, device=y.device)
        return torch.addcmul(x, y, mask.floor_().div_(keep_prob))

    def _forward(self, x: torch.Tensor, hw_shape: Tuple[int, int]) -> torch.Tensor:
        x = self._residual(x, self.attn(self.norm1(x), hw_shape))
        if self.drop_global_tokens:
            x = x[:, self.num_tokens:]
        return self._residual(x, self.mlp(self.norm2(x)))

    def forward(self, x: torch.Tensor, hw_shape: Tuple[int, int]) -> torch.Tensor:
        if self.with_cp and x.requires_grad:
            return cp.checkpoint(self._forward, x, hw_shape, use_reentrant=False)
        return self._forward(x, hw_shape)


class ResidualPatchMerging(BaseModule):
    """Residual patch merging between LightViT stages (paper Sec. 3.1).

    Image tokens: 2x2 space-to-depth, LayerNorm(4C) + Linear(4C -> C'), plus
    a residual of 2x2 max-pooling + Linear(C -> C'). Global tokens:
    LayerNorm(C) + Linear(C -> C'). Odd grids are zero-padded bottom/right
    first (official detection code), so the output grid is
    (ceil(H / 2), ceil(W / 2)).

    Args:
        in_dims (int): Input width C.
        out_dims (int): Output width C'.
        num_tokens (int): Number of global tokens T.
        init_cfg (dict, optional): Initialization config. Defaults to None.

    Shapes:
        input: (B, T + H * W, C) and (H, W); output: (B, T + H' * W', C') and
        (H', W').
    """

    def __init__(self, in_dims: int, out_dims: int, num_tokens: int, init_cfg=None):
        super().__init__(init_cfg)
        self.num_tokens = num_tokens
        self.norm = nn.LayerNorm(4 * in_dims)
        self.reduction = nn.Linear(4 * in_dims, out_dims, bias=False)
        self.norm2 = nn.LayerNorm(in_dims)
        self.proj = nn.Linear(in_dims, out_dims, bias=False)
        self.res_proj = nn.Linear(in_dims, out_dims, bias=False)

    def forward(self, x: torch.Tensor,
                hw_shape: Tuple[int, int]) -> Tuple[torch.Tensor, Tuple[int, int]]:
        B, _, C = x.shape
        H, W = hw_shape
        x_glb, x_img = x[:, :self.num_tokens], x[:, self.num_tokens:]
        Ho, Wo = (H + 1) // 2, (W + 1) // 2
        # Pad odd sides by one (zero rows/columns where even: no branch on the
        # size, so that torch.export captures one graph for every size).
        x_img = F.pad(x_img.reshape(B, H, W, C), (0, 0, 0, 2 * Wo - W, 0, 2 * Ho - H))
        patches = x_img.view(B, Ho, 2, Wo, 2, C)
        residual = self.res_proj(patches.amax(dim=(2, 4)).view(B, Ho * Wo, C))
        # Channel order (row, col) = (0,0), (1,0), (0,1), (1,1), as in Swin.
        x_img = copy_as(patches.permute(0, 1, 3, 4, 2, 5), B, Ho * Wo, 4 * C)
        x_img = self.reduction(self.norm(x_img)) + residual
        x_glb = self.proj(self.norm2(x_glb))
        return torch.cat([x_glb, x_img], dim=1), (Ho, Wo)


class LightViTStage(ModuleList):
    """One stage of LightViT: an optional :class:`ResidualPatchMerging`
    (every stage but the first), then the :class:`LightViTBlock` s.

    A ``ModuleList`` so that the children keep the official parameter names
    ``stages.i.j.*`` (``j = 0`` is the patch merging where there is one).

    Args:
        blocks (Sequence[LightViTBlock]): The stage's blocks.
        merging (ResidualPatchMerging, optional): Downsampling at the stage's
            start. Defaults to None.

    Shapes:
        ``forward(x, hw_shape)``: x (B, T + H * W, C_in) with ``hw_shape =
        (H, W)`` -> (x (B, T + H' * W', C), (H', W')), with H' = ceil(H / 2)
        after a patch merging, else H' = H.
    """

    def __init__(self, blocks, merging: Optional[BaseModule] = None):
        super().__init__(([merging] if merging is not None else []) + list(blocks))
        self.has_merging = merging is not None

    def forward(self, x: torch.Tensor, hw_shape: Tuple[int, int]
                ) -> Tuple[torch.Tensor, Tuple[int, int]]:
        blocks = iter(self)
        if self.has_merging:
            x, hw_shape = next(blocks)(x, hw_shape)
        for block in blocks:
            x = block(x, hw_shape)
        return x, hw_shape


class LightViT(BaseModule):
    """LightViT backbone for dense prediction and classification.

    Paper: "LightViT: Towards Light-Weight Convolution-Free Vision
    Transformers", Huang et al. 2022, https://arxiv.org/abs/2207.05557.
    Implements the official detection backbone (github.com/hunto/LightViT,
    ``detection/lightvit.py``) with the official parameter names: a stride-8
    convolutional stem, learnable global tokens, and three stages of LightViT
    blocks joined by residual patch merging. Inputs of any size work: grids
    are padded for the windows and before patch merging.

    Args:
        arch (str | dict): ``'tiny'``/``'t'``, ``'small'``/``'s'``,
            ``'base'``/``'b'``, or a dict with the keys ``embed_dims``,
            ``depths``, ``num_heads``, ``mlp_ratios`` (one entry per stage)
            and ``num_tokens``. Defaults to ``'tiny'``.
        in_channels (int): Channels of the input image. Defaults to 3.
        num_tokens (int, optional): Number of global tokens; None takes the
            arch's (8 / 16 / 24 for T / S / B). Defaults to None.
        window_size (int): Side of the local attention windows. Defaults to 7.
        qkv_bias (bool): Bias in the qkv projections. Defaults to True.
        drop_path_rate (float): Stochastic depth rate, increased linearly
            over the blocks from 0. Defaults to 0.1.
        out_indices (int | Sequence[int]): Stages whose image tokens are
            output, negatives counted from the end. Defaults to (0, 1, 2).
        frozen_stages (int): -1 freezes nothing, 0 the stem and global
            tokens, k the stem and the first k stages (ResNet semantics).
            Defaults to -1.
        norm_eval (bool): Keep the stem's BatchNorms in eval mode during
            training (frozen statistics, as the paper's detection recipe).
            Defaults to False.
        with_cp (bool): Gradient checkpointing per block (less memory, slower).
            Defaults to False.
        out_type (str): ``'featmap'``: image tokens as NCHW maps after the
            per-output LayerNorms ``norm{i}``, global tokens dropped after the
            attention of the very last block (official detection backbone).
            ``'raw'``: the tokens (B, T + H_i * W_i, C_i), global tokens first
            and kept through the last block, with no output norm (official
            classification model; see :class:`LightViTClsNeck`).
            Defaults to ``'featmap'``.
        deploy (bool): Build the inference-only structure that
            :meth:`switch_to_deploy` makes (mmpretrain's RepVGG way), so that
            the state dict of a switched model loads strictly into
            ``LightViT(arch=..., deploy=True)``; built in eval mode, and
            ``with_cp`` is off. Defaults to False.
        init_cfg (dict | list[dict], optional): Initialization config.
            Defaults to truncated-normal Linear weights (std 0.02) and unit
            LayerNorms. ``dict(type='Pretrained', checkpoint=PATH)`` loads
            an official or OpenMMLab checkpoint through
            :meth:`load_pretrained` in :meth:`init_weights`; its other keys
            (``prefix``, ``checkpoint_key``, ``global_token_init``,
            ``weights_only``, ``map_location``) are passed on. Whatever the
            load path (also ``load_state_dict``, mmengine's
            ``load_checkpoint`` and ``load_from``), a checkpoint's global
            tokens are tiled to ``num_tokens`` when it is a whole multiple
            of their count (``tile_global_tokens_pre_hook`` of
            :mod:`lightvit_mm.models.backbones.lightvit_weights`).

    Raises:
        KeyError: ``arch`` is an unknown name.
        ValueError: ``arch`` dict lacks a key or has stages of unequal
            length; ``num_heads`` does not divide a width; ``out_indices``
            out of range or repeated; ``frozen_stages`` out of range; an
            unknown ``out_type``. In ``forward``: an input that is not
            (B, in_channels, H, W) or is smaller than 8x8.

    Shapes:
        input: (B, in_channels, H, W), any H, W >= 8. Output: a tuple with one
        entry per ``out_indices``: (B, C_i, H_i, W_i) maps (``'featmap'``) or
        (B, T + H_i * W_i, C_i) tokens (``'raw'``), with C_i the stage width
        and H_i = ceil(H / 8 / 2^i) for the default stem.

    Examples:
        >>> import torch
        >>> from lightvit_mm.models import LightViT
        >>> model = LightViT(arch='tiny').eval()
        >>> for out in model(torch.rand(1, 3, 224, 224)):
        ...     print(tuple(out.shape))
        (1, 64, 28, 28)
        (1, 128, 14, 14)
        (1, 256, 7, 7)
    """
    arch_zoo = {
        **dict.fromkeys(['t', 'tiny'], {
            'embed_dims': [64, 128, 256],
            'depths': [2, 6, 6],
            'num_heads': [2, 4, 8],
            'mlp_ratios': [8, 4, 4],
            'num_tokens': 8,
        }),
        **dict.fromkeys(['s', 'small'], {
            'embed_dims': [96, 192, 384],
            'depths': [2, 6, 6],
            'num_heads': [3, 6, 12],
            'mlp_ratios': [8, 4, 4],
            'num_tokens': 16,
        }),
        **dict.fromkeys(['b', 'base'], {
            'embed_dims': [128, 256, 512],
            'depths': [3, 8, 6],
            'num_heads': [4, 8, 16],
            'mlp_ratios': [8, 4, 4],
            'num_tokens': 24,
        }),
    }
    essential_keys = ('embed_dims', 'depths', 'num_heads', 'mlp_ratios', 'num_tokens')
    stem_stride = 8

    def __init__(self,
                 arch: Union[str, Dict] = 'tiny',
                 in_channels: int = 3,
                 num_tokens: Optional[int] = None,
                 window_size: int = 7,
                 qkv_bias: bool = True,
                 drop_path_rate: float = 0.1,
                 out_indices: Union[int, Sequence[int]] = (0, 1, 2),
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 out_type: str = 'featmap',
                 deploy: bool = False,
                 init_cfg=None):
        if init_cfg is None:
            init_cfg = [
                dict(type='TruncNormal', layer='Linear', std=.02, bias=0.),
                dict(type='Constant', layer='LayerNorm', val=1., bias=0.),
            ]
        cfgs = init_cfg if isinstance(init_cfg, list) else [init_cfg]
        pretrained = [dict(c) for c in cfgs if c and c.get('type') == 'Pretrained']
        super().__init__([c for c in cfgs if c and c.get('type') != 'Pretrained'] or None)
        self.pretrained_cfgs = pretrained
        self.arch_settings = self._parse_arch(arch)
        self.embed_dims = list(self.arch_settings['embed_dims'])
        self.depths = list(self.arch_settings['depths'])
        self.num_stages = len(self.embed_dims)
        self.num_tokens = (self.arch_settings['num_tokens']
                           if num_tokens is None else num_tokens)
        self.out_indices = self._parse_out_indices(out_indices, self.num_stages)
        if not -1 <= frozen_stages <= self.num_stages:
            raise ValueError(f'frozen_stages must be in [-1, {self.num_stages}] '
                             f'(-1: none, 0: stem, k: stem + first k stages), '
                             f'got {frozen_stages}')
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        if out_type not in ('featmap', 'raw'):
            raise ValueError(f"out_type must be 'featmap' or 'raw', got {out_type!r}")
        self.out_type = out_type
        self.deploy = deploy

        self.patch_embed = ConvStem(in_channels, self.embed_dims[0], deploy)
        self.global_token = nn.Parameter(torch.zeros(1, self.num_tokens, self.embed_dims[0]))

        dpr = torch.linspace(0, drop_path_rate, sum(self.depths)).tolist()
        self.stages = ModuleList()
        for i, (dims, depth, heads, ratio) in enumerate(zip(
                self.embed_dims, self.depths, self.arch_settings['num_heads'],
                self.arch_settings['mlp_ratios'])):
            merging = (ResidualPatchMerging(self.embed_dims[i - 1], dims, self.num_tokens)
                       if i > 0 else None)
            last_stage = i == self.num_stages - 1
            blocks = [LightViTBlock(
                dims, heads, self.num_tokens, ratio, window_size, qkv_bias,
                drop_path=dpr[sum(self.depths[:i]) + j],
                drop_global_tokens=(out_type == 'featmap' and last_stage and j == depth - 1),
                with_cp=with_cp and not deploy, deploy=deploy) for j in range(depth)]
            self.stages.append(LightViTStage(blocks, merging))

        if out_type == 'featmap':
            for i in self.out_indices:
                self.add_module(f'norm{i}', nn.LayerNorm(self.embed_dims[i], eps=1e-6))
        self._freeze_stages()
        # Every load path (load_state_dict, load_checkpoint, load_from, init_cfg) tiles
        # a checkpoint's global tokens to a whole multiple of their count.
        self.register_load_state_dict_pre_hook(tile_global_tokens_pre_hook)
        if deploy:
            self.eval()

    @classmethod
    def _parse_arch(cls, arch) -> Dict:
        if isinstance(arch, str):
            key = arch.lower()
            if key not in cls.arch_zoo:
                raise KeyError(f'Unknown LightViT arch {arch!r}; accepted: '
                               f'{sorted(cls.arch_zoo)} or a dict with keys '
                               f'{list(cls.essential_keys)}')
            return cls.arch_zoo[key]
        if not isinstance(arch, dict):
            raise TypeError(f'arch must be a str or a dict, got {type(arch).__name__}')
        missing = [k for k in cls.essential_keys if k not in arch]
        if missing:
            raise ValueError(f'LightViT arch dict is missing {missing}; it needs '
                             f'all of {list(cls.essential_keys)}')
        per_stage = ('embed_dims', 'depths', 'num_heads', 'mlp_ratios')
        lengths = {k: len(arch[k]) for k in per_stage}
        if len(set(lengths.values())) != 1:
            raise ValueError(f'LightViT arch entries must have one value per stage, '
                             f'got lengths {lengths}')
        for dims, heads in zip(arch['embed_dims'], arch['num_heads']):
            if dims % heads:
                raise ValueError(f'num_heads {heads} does not divide embed_dims '
                                 f'{dims} in arch {arch}')
        return arch

    @staticmethod
    def _parse_out_indices(out_indices, num_stages: int) -> Tuple[int, ...]:
        if isinstance(out_indices, int):
            out_indices = [out_indices]
        if not isinstance(out_indices, Sequence) or not out_indices:
            raise TypeError('out_indices must be an int or a non-empty sequence '
                            f'of ints, got {out_indices!r}')
        parsed = []
        for index in out_indices:
            if not isinstance(index, int) or not -num_stages <= index < num_stages:
                raise ValueError(f'Invalid out_indices {tuple(out_indices)}: each '
                                 f'must be an int in [{-num_stages}, {num_stages - 1}]')
            parsed.append(index % num_stages)
        if len(set(parsed)) != len(parsed):
            raise ValueError(f'out_indices {tuple(out_indices)} name a stage twice; each of '
                             f'the {num_stages} stages may appear at most once')
        return tuple(sorted(parsed))

    def init_weights(self):
        """The official initialisation: truncated-normal global tokens (std
        0.02), then ``init_cfg`` and the sub-modules' own (mmengine), then the
        weights of every ``Pretrained`` entry through :meth:`load_pretrained`.

        The ``Pretrained`` entries were set apart from ``init_cfg`` by the
        constructor (``pretrained_cfgs``): mmengine's ``PretrainedInit``
        knows neither the official formats nor the keys ``checkpoint_key``,
        ``global_token_init`` and ``weights_only``.
        """
        if self.is_init:
            return super().init_weights()  # mmengine warns and does nothing
        trunc_normal_(self.global_token, std=.02)
        super().init_weights()
        for cfg in self.pretrained_cfgs:
            self.load_pretrained(**{k: v for k, v in cfg.items() if k != 'type'})

    def load_pretrained(self, checkpoint: str, **kwargs) -> Dict[str, list]:
        """Load backbone weights from an official or OpenMMLab checkpoint;
        see :func:`~lightvit_mm.models.backbones.lightvit_weights.load_lightvit_weights`
        for the accepted formats, the keyword arguments and the errors raised."""
        return load_lightvit_weights(self, checkpoint, **kwargs)

    def _freeze_stages(self):
        if self.frozen_stages < 0:
            return
        frozen = [self.patch_embed]
        frozen += [self.stages[i] for i in range(self.frozen_stages)]
        frozen += [getattr(self, f'norm{i}') for i in self.out_indices
                   if i < self.frozen_stages and hasattr(self, f'norm{i}')]
        self.global_token.requires_grad = False
        for module in frozen:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def switch_to_deploy(self):
        """Re-parameterise for inference (mmpretrain's name for it): fold the
        stem's BatchNorms into their convolutions, compute every block's
        relative position bias once (:meth:`LightViTAttention.switch_to_deploy`)
        and turn gradient checkpointing off. Outputs stay those of the eval
        model to float rounding (within 1e-5 here).

        Afterwards the model is for inference only: the state dict has other
        keys (no BatchNorm statistics, ``stem.{0,3,6,9}.bias`` and
        ``position_bias`` instead of the bias tables; it loads strictly into
        ``LightViT(..., deploy=True)``), and :meth:`train` with ``mode=True``
        raises. Calling it twice does nothing the second time.
        """
        if self.deploy:
            return
        for module in list(self.modules()):
            if module is not self and hasattr(module, 'switch_to_deploy'):
                module.switch_to_deploy()
            if hasattr(module, 'with_cp'):
                module.with_cp = False
        self.deploy = True
        self.eval()

    def train(self, mode: bool = True):
        if mode and self.deploy:
            raise RuntimeError('This LightViT was switched to deploy mode (BatchNorms folded, '
                               'position bias fixed) and can only run inference; build a new '
                               'one to train')
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        if x.dim() != 4 or x.shape[1] != self.patch_embed.stem[0].in_channels:
            raise ValueError(
                f'LightViT expects images of shape (B, '
                f'{self.patch_embed.stem[0].in_channels}, H, W), got {tuple(x.shape)}')
        if min(x.shape[2:]) < self.stem_stride:
            raise ValueError(f'LightViT needs images of at least {self.stem_stride}x'
                             f'{self.stem_stride} pixels (the stem\'s stride), got '
                             f'{x.shape[2]}x{x.shape[3]}')
        x, hw_shape = self.patch_embed(x)
        x = torch.cat([self.global_token.expand(x.shape[0], -1, -1), x], dim=1)
        outs = []
        for i, stage in enumerate(self.stages):
            x, hw_shape = stage(x, hw_shape)
            if i in self.out_indices and self.out_type == 'raw':
                outs.append(x)
            elif i in self.out_indices:
                H, W = hw_shape
                out = getattr(self, f'norm{i}')(x[:, -H * W:])
                outs.append(copy_as(out.view(-1, H, W, self.embed_dims[i]).permute(
                    0, 3, 1, 2), -1, self.embed_dims[i], H, W))  # NCHW, contiguous
        return tuple(outs)

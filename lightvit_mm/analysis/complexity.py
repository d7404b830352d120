# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""Parameter and FLOP counting with mmengine's analyzer, attention included.

mmengine's :class:`~mmengine.analysis.FlopAnalyzer` (what
``get_model_complexity_info`` uses) has no handle for
``aten::scaled_dot_product_attention``, so the attention products of
:class:`~lightvit_mm.LightViT` would count as zero. :func:`count_complexity`
adds :func:`sdpa_flop_jit` for it; ``attention=False`` skips those products
instead, the convention of mmcv 1.x's hook-based counter that the paper used
for its detection FLOPs.

As everywhere in mmengine (and mmcv), one "FLOP" is one multiply-add.

Examples:
    >>> import torch
    >>> from lightvit_mm import LightViT
    >>> from lightvit_mm.analysis.complexity import count_complexity
    >>> stats = count_complexity(LightViT('tiny').eval(), torch.rand(1, 3, 224, 224))
    >>> sorted(stats)
    ['attention_flops', 'flops', 'params', 'unsupported_ops']
"""
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.analysis import FlopAnalyzer, parameter_count
from mmengine.analysis.jit_handles import get_shape

SDPA_OP = 'aten::scaled_dot_product_attention'


def sdpa_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """FLOP handle of ``aten::scaled_dot_product_attention`` for mmengine.

    Counts the two matrix products in multiply-adds: ``Q K^T`` (Nq x Nk x d
    per batch and head) and ``softmax(.) V`` (Nq x Nk x dv), i.e.
    ``2 * B * heads * Nq * Nk * d`` for dv = d. Like mmengine's ``matmul``
    handle it leaves out the scaling, the mask addition and the softmax.

    Args:
        inputs (list[torch._C.Value]): The op's inputs: query (..., Nq, d),
            key (..., Nk, d), value (..., Nk, dv), then the optional ones.
        outputs (list[torch._C.Value]): The op's output (..., Nq, dv).

    Returns:
        int: The multiply-adds of one call.
    """
    query, key = get_shape(inputs[0]), get_shape(inputs[1])
    out = get_shape(outputs[0])
    rows = math.prod(out[:-1])  # batch x heads x Nq, after broadcasting
    return int(rows * key[-2] * (query[-1] + out[-1]))


class _ForwardWith(nn.Module):
    """Calls ``model(*inputs, **kwargs)``, so that the analyzer, which traces
    ``module(*inputs)``, can pass keyword arguments (``mode='tensor'``, data
    samples) without the model being changed."""

    def __init__(self, model: nn.Module, **kwargs):
        super().__init__()
        self.model = model
        self.kwargs = kwargs

    def forward(self, *inputs):
        return self.model(*inputs, **self.kwargs)


def count_complexity(model: nn.Module,
                     inputs: Union[torch.Tensor, Tuple[torch.Tensor, ...]],
                     attention: bool = True,
                     **forward_kwargs) -> Dict[str, Any]:
    """Count the parameters and FLOPs of one forward pass of a model.

    Args:
        model (nn.Module): The model, usually in eval mode (drop-path off).
        inputs (Tensor | tuple[Tensor]): Positional inputs of the forward.
        attention (bool): Count the matrix products of
            ``scaled_dot_product_attention`` (:func:`sdpa_flop_jit`). False
            skips them, as mmcv 1.x's hook-based counter did. Defaults to True.
        **forward_kwargs: Keyword arguments of the forward, e.g.
            ``mode='tensor'`` and ``data_samples`` for OpenMMLab models.

    Returns:
        dict: ``params`` (int, all parameters of ``model``), ``flops`` (int,
        multiply-adds under the chosen convention), ``attention_flops`` (int,
        those of the attention products, counted whatever ``attention``
        says) and ``unsupported_ops`` (dict, op name -> calls counted as zero).
    """
    if not isinstance(inputs, tuple):
        inputs = (inputs, )
    traced = _ForwardWith(model, **forward_kwargs) if forward_kwargs else model
    analyzer = FlopAnalyzer(traced, inputs).set_op_handle(SDPA_OP, sdpa_flop_jit)
    analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    analyzer.tracer_warnings('none')
    total = analyzer.total()
    attention_flops = analyzer.by_operator().get(SDPA_OP.split('::')[-1], 0)
    return dict(
        params=parameter_count(model)[''],
        flops=int(total if attention else total - attention_flops),
        attention_flops=int(attention_flops),
        unsupported_ops=dict(analyzer.unsupported_ops()))


def build_from_config(config: str, cfg_options: Optional[dict] = None) -> Tuple[nn.Module, Any]:
    """Build the model of an mmdet / mmseg / mmpretrain config for counting.

    The backbone's ``init_cfg`` is dropped (no checkpoint download), SyncBN
    layers become BatchNorm (no process group needed), and the model is put
    in eval mode.

    Args:
        config (str): Path of the config file.
        cfg_options (dict, optional): Overrides merged into the config.

    Returns:
        tuple: The model and the config.
    """
    from mmengine.config import Config
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import MODELS, DefaultScope, init_default_scope

    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    cfg.model.backbone.init_cfg = None
    init_default_scope(cfg.default_scope)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(cfg.model)
    return revert_sync_batchnorm(model).eval(), cfg


def model_inputs(model: nn.Module, scope: str, size: Sequence[int]) -> Tuple[tuple, dict]:
    """Dummy inputs of ``model.forward(..., mode='tensor')`` for one image.

    Args:
        model (nn.Module): A model built by :func:`build_from_config`.
        scope (str): Its ``default_scope``: ``'mmdet'``, ``'mmseg'`` or
            ``'mmpretrain'``.
        size (Sequence[int]): Image size (H, W) after padding.

    Returns:
        tuple: Positional inputs (a (1, 3, H, W) tensor) and keyword
        arguments of the forward.
    """
    H, W = size
    image = torch.rand(1, 3, H, W)
    kwargs = dict(mode='tensor')
    if scope == 'mmdet':
        from mmdet.structures import DetDataSample
        sample = DetDataSample(metainfo=dict(
            img_shape=(H, W), ori_shape=(H, W), pad_shape=(H, W),
            batch_input_shape=(H, W), scale_factor=(1., 1.)))
        kwargs['data_samples'] = [sample]
    return (image, ), kwargs

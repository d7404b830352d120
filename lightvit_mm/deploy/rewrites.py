# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""Exact stand-ins, for export only, of modules that torch's ONNX exporter
cannot write at the export size.

``nn.AdaptiveAvgPool2d`` (mmseg's pyramid pooling in UPerNet, scales 1, 2,
3, 6): the TorchScript exporter writes it only when the output size divides
the input size (a 4x4 map pooled to 3x3 fails). :class:`SlicedAdaptiveAvgPool2d`
computes the same windows as PyTorch's adaptive pooling (cell ``i`` of ``n``
over ``[floor(i*H/n), ceil((i+1)*H/n))``) as slices and means, first over
rows, then over columns (the windows are rectangles, so this is their mean),
which export as plain ONNX ``Slice``/``ReduceMean``/``Concat`` for a static
input size.
"""
import torch
import torch.nn as nn


def _pool_axis(x: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    # only non-negative floor divisions: the tracer may record the size
    # arithmetic as ONNX integer ops, which truncate
    length, cells = x.shape[dim], []
    for i in range(size):
        start, end = (i * length) // size, ((i + 1) * length + size - 1) // size
        cells.append(x.narrow(dim, start, end - start).mean(dim, keepdim=True))
    return torch.cat(cells, dim)


class SlicedAdaptiveAvgPool2d(nn.Module):
    """``nn.AdaptiveAvgPool2d(output_size)`` as slices and means (module docstring).

    Args:
        output_size (int | tuple[int, int]): (h, w) of the output; ``None``
            entries keep the input's size.

    Shapes: (B, C, H, W) -> (B, C, h, w).
    """

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = self.output_size
        h, w = (size, size) if isinstance(size, int) else size
        h, w = h or x.shape[-2], w or x.shape[-1]
        return _pool_axis(_pool_axis(x, h, -2), w, -1)


def rewrite_for_export(model: nn.Module) -> int:
    """Replace, in place, every ``nn.AdaptiveAvgPool2d`` of ``model`` by a
    :class:`SlicedAdaptiveAvgPool2d` of the same output size; return how many."""
    count = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.AdaptiveAvgPool2d):
                setattr(module, name, SlicedAdaptiveAvgPool2d(child.output_size))
                count += 1
    return count

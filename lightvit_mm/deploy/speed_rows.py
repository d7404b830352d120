# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""Rows of the deployment speed table for the low precisions: zero-argument
callables, each one inference of the same model on the same input, for
``tools/analysis/benchmark.py --tables deploy`` to time in its interleaved
rounds beside the fp32 rows (this module times nothing itself).

- :func:`pytorch_rows`: PyTorch bf16 autocast, eager and ``torch.compile``
  with inductor's freezing;
- :func:`runtime_rows`: OpenVINO bf16 (hint) and int8 (NNCF), ONNX Runtime
  int8 (``quantize_static``) of one ONNX graph;
- :func:`gemm_rows`: fp32, bf16 and int8 (``torch._int_mm``) matrix products,
  the peaks each row's share is given against.

Row names say the precision the row really runs in on this CPU
(:func:`~lightvit_mm.deploy.precision.runtime_precision`): a bf16 row on a
CPU without bf16 units is marked as such.
"""
import os.path as osp
from typing import Callable, Dict, Tuple

import torch
import torch.nn as nn

from .precision import cpu_capabilities


def _bf16_note(backend: str) -> str:
    """'' where ``backend`` runs bf16 here, else what it does instead."""
    if cpu_capabilities().runs_bf16(backend):
        return ''
    return ' (no bf16 units: emulated)' if backend == 'pytorch' else ' (no bf16 units: runs f32)'


def pytorch_rows(model: nn.Module, inputs: torch.Tensor,
                 compile: bool = True) -> Dict[str, Callable[[], object]]:
    """PyTorch bf16 rows of ``model`` (eval mode) on ``inputs`` (B, 3, H, W):
    ``torch.autocast('cpu', dtype=torch.bfloat16)`` eager, and with
    ``compile`` the same compiled by ``torch.compile`` (inductor, default
    mode) with ``freezing`` (weights folded as constants; compiled at the
    first call, which the benchmark's warm-up rounds take)."""
    model = model.eval()

    def eager():
        with torch.inference_mode(), torch.autocast('cpu', dtype=torch.bfloat16):
            return model(inputs)

    rows = {f'PyTorch eager bf16 autocast{_bf16_note("pytorch")}': eager}
    if compile:
        import torch._inductor.config as inductor_config
        compiled = torch.compile(model)

        def frozen():
            with inductor_config.patch(freezing=True), torch.no_grad(), \
                    torch.autocast('cpu', dtype=torch.bfloat16):
                return compiled(inputs)

        rows[f'PyTorch compiled bf16 autocast, freezing{_bf16_note("pytorch")}'] = frozen
    return rows


def runtime_rows(onnx_path: str, inputs: torch.Tensor,
                 work_dir: str) -> Dict[str, Callable[[], object]]:
    """Runtime rows of the ONNX graph ``onnx_path`` (one input) on
    ``inputs``: OpenVINO with the bf16 hint, OpenVINO int8 (NNCF), ONNX
    Runtime int8 (QDQ), each where its library is installed. The int8 graphs
    are calibrated on ``inputs`` itself (enough for timing; accuracy needs
    the training images of ``export.py --precision int8``) and written into
    the folder ``work_dir``."""
    import importlib.util
    import shutil

    from .backends import ONNXRuntimeGraph, OpenVINOGraph, convert_onnx_to_openvino
    from .precision import runtime_precision
    from .quantize import quantize_graph
    x = [inputs.detach().float().contiguous().numpy()]
    rows = {}
    if importlib.util.find_spec('openvino') is not None:
        xml = convert_onnx_to_openvino(onnx_path, osp.join(work_dir, 'bf16.xml'))
        graph = OpenVINOGraph(*xml, precision=runtime_precision('bf16', 'openvino'))
        rows[f'OpenVINO bf16{_bf16_note("openvino")}'] = lambda: graph(x)
        if importlib.util.find_spec('nncf') is not None:
            xml = convert_onnx_to_openvino(onnx_path, osp.join(work_dir, 'int8.xml'))
            quantize_graph('openvino', xml, [x])
            int8 = OpenVINOGraph(*xml, precision='int8')
            rows['OpenVINO int8 (NNCF)'] = lambda: int8(x)
    if importlib.util.find_spec('onnxruntime') is not None:
        path = osp.join(work_dir, 'int8.onnx')
        shutil.copyfile(onnx_path, path)
        quantize_graph('onnxruntime', [path], [x])
        ort = ONNXRuntimeGraph(path)
        rows['ONNX Runtime int8 (quantize_static)'] = lambda: ort(x)
    return rows


def gemm_rows(size: int = 2048) -> Dict[str, Tuple[Callable[[], object], float]]:
    """Matrix products of two ``size`` x ``size`` matrices in fp32, bf16 and
    int8 (``torch._int_mm``, int32 accumulation), each with its operation
    count (2 size^3): the peak rate of each precision on this CPU."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a16, b16 = a.bfloat16(), b.bfloat16()
    a8, b8 = (torch.randint(-128, 127, (size, size), dtype=torch.int8) for _ in range(2))
    out32, out16 = torch.empty(size, size), torch.empty(size, size, dtype=torch.bfloat16)
    flop = 2.0 * size**3
    return {'fp32 GEMM': (lambda: torch.mm(a, b, out=out32), flop),
            f'bf16 GEMM{_bf16_note("pytorch")}': (lambda: torch.mm(a16, b16, out=out16), flop),
            'int8 GEMM (torch._int_mm)': (lambda: torch._int_mm(a8, b8), flop)}

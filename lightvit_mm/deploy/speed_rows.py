# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""Rows of the deployment speed table (``tools/analysis/benchmark.py
--tables deploy``): each a :class:`Row`, one inference of the same weights
on the same input, for the benchmark to time in its interleaved rounds
(this module times nothing but :func:`time_parts`).

- :func:`pytorch_rows`: PyTorch bf16 autocast, eager and ``torch.compile``
  with inductor's freezing;
- :func:`runtime_rows`: one ONNX graph (:func:`export_static_onnx`) in
  ONNX Runtime and OpenVINO, fp32, OpenVINO bf16 (hint) and int8 (NNCF), ONNX
  Runtime int8 (``quantize_static``);
- :func:`gemm_rows`: fp32, bf16 and int8 (``torch._int_mm``) matrix products,
  the peaks each row's share is given against;
- :func:`whole_model_rows`: a whole detector or segmentor of a config
  (random weights, one synthetic image of the paper's test size,
  :func:`synthetic_batch`) as PyTorch eager and as deployed folders
  (:func:`~lightvit_mm.deploy.exporter.export_model`, fp32 and OpenVINO
  bf16), and :func:`time_parts`, where that time goes.

Row names say the precision the row really runs in on this CPU
(:func:`~lightvit_mm.deploy.precision.runtime_precision`): a bf16 row on a
CPU without bf16 units is marked as such, and its :attr:`Row.precision` is
what runs.
"""
import copy
import importlib.util
import os.path as osp
import shutil
import time
import warnings
from collections import defaultdict
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from .precision import cpu_capabilities


class Row(NamedTuple):
    """One row of the deploy table.

    Attributes:
        call (callable): One inference, no arguments; returns the outputs.
        precision (str): What it runs in on this CPU: 'fp32', 'bf16' or
            'int8' (the GEMM peak its share is given against).
        flop (float, optional): Operations of one call, for the GEMM rows.
    """
    call: Callable[[], object]
    precision: str
    flop: Optional[float] = None


def _bf16_note(backend: str) -> str:
    """'' where ``backend`` runs bf16 here, else what it does instead."""
    if cpu_capabilities().runs_bf16(backend):
        return ''
    return ' (no bf16 units: emulated)' if backend == 'pytorch' else ' (no bf16 units: runs f32)'


def export_static_onnx(module: nn.Module, inputs: torch.Tensor, path: str) -> str:
    """Export ``module`` (eval mode, one tensor in) to the ONNX file ``path``
    at the static shape of ``inputs`` (B, 3, H, W), with the exporter and
    opset of :mod:`lightvit_mm.deploy.exporter`; return ``path``."""
    from .exporter import OPSET
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter('ignore')
        torch.onnx.export(module.eval(), (inputs, ), path, dynamo=False, opset_version=OPSET,
                          do_constant_folding=True)
    return path


def pytorch_rows(model: nn.Module, inputs: torch.Tensor,
                 compile: bool = True) -> Dict[str, Row]:
    """PyTorch bf16 rows of ``model`` (eval mode) on ``inputs`` (B, 3, H, W):
    ``torch.autocast('cpu', dtype=torch.bfloat16)`` eager, and with
    ``compile`` the same compiled by ``torch.compile`` (inductor, default
    mode) with ``freezing`` (weights folded as constants; compiled at the
    first call, which the benchmark's warm-up rounds take)."""
    model = model.eval()
    precision = 'bf16'  # autocast casts whatever the CPU has (emulated without bf16 units)

    def eager():
        with torch.inference_mode(), torch.autocast('cpu', dtype=torch.bfloat16):
            return model(inputs)

    rows = {f'PyTorch eager bf16 autocast{_bf16_note("pytorch")}': Row(eager, precision)}
    if compile:
        import torch._inductor.config as inductor_config
        compiled = torch.compile(model)

        def frozen():
            with inductor_config.patch(freezing=True), torch.no_grad(), \
                    torch.autocast('cpu', dtype=torch.bfloat16):
                return compiled(inputs)

        rows[f'PyTorch compiled bf16 autocast, freezing{_bf16_note("pytorch")}'] = \
            Row(frozen, precision)
    return rows


def runtime_rows(onnx_path: str, inputs: torch.Tensor, work_dir: str) -> Dict[str, Row]:
    """Runtime rows of the ONNX graph ``onnx_path`` (one input) on
    ``inputs``, each where its library is installed: fp32 in ONNX Runtime
    and OpenVINO, OpenVINO with the bf16 hint, OpenVINO
    int8 (NNCF), ONNX Runtime int8 (QDQ). The int8 graphs are calibrated on
    ``inputs`` itself (enough for timing; accuracy needs the training images
    of ``export.py --precision int8``). Files go into the folder ``work_dir``."""
    from .backends import ONNXRuntimeGraph, OpenVINOGraph, convert_onnx_to_openvino
    from .precision import runtime_precision
    from .quantize import quantize_graph
    x = [inputs.detach().float().contiguous().numpy()]
    has_ort = importlib.util.find_spec('onnxruntime') is not None
    has_ov = importlib.util.find_spec('openvino') is not None
    rows = {}

    def openvino(name: str, precision: str, int8: bool = False) -> Callable[[], object]:
        xml = convert_onnx_to_openvino(onnx_path, osp.join(work_dir, f'{name}.xml'))
        if int8:
            quantize_graph('openvino', xml, [x])
        graph = OpenVINOGraph(*xml, precision=precision)
        return lambda: graph(x)

    def onnxruntime(path: str) -> Callable[[], object]:
        graph = ONNXRuntimeGraph(path)
        return lambda: graph(x)

    if has_ort:
        rows['ONNX Runtime fp32'] = Row(onnxruntime(onnx_path), 'fp32')
    if has_ov:
        rows['OpenVINO fp32'] = Row(openvino('fp32', 'fp32'), 'fp32')
        runs = runtime_precision('bf16', 'openvino')
        rows[f'OpenVINO bf16{_bf16_note("openvino")}'] = Row(openvino('bf16', runs), runs)
        if importlib.util.find_spec('nncf') is not None:
            rows['OpenVINO int8 (NNCF)'] = Row(openvino('int8', 'int8', int8=True), 'int8')
    if has_ort:
        path = osp.join(work_dir, 'int8.onnx')
        shutil.copyfile(onnx_path, path)
        quantize_graph('onnxruntime', [path], [x])
        rows['ONNX Runtime int8 (quantize_static)'] = Row(onnxruntime(path), 'int8')
    return rows


def gemm_rows(size: int = 2048) -> Dict[str, Row]:
    """Matrix products of two ``size`` x ``size`` matrices in fp32, bf16 and
    int8 (``torch._int_mm``, int32 accumulation), each with its operation
    count (2 size^3): the peak rate of each precision on this CPU."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a16, b16 = a.bfloat16(), b.bfloat16()
    a8, b8 = (torch.randint(-128, 127, (size, size), dtype=torch.int8) for _ in range(2))
    out32, out16 = torch.empty(size, size), torch.empty(size, size, dtype=torch.bfloat16)
    flop = 2.0 * size**3
    return {'fp32 GEMM': Row(lambda: torch.mm(a, b, out=out32), 'fp32', flop),
            f'bf16 GEMM{_bf16_note("pytorch")}': Row(lambda: torch.mm(a16, b16, out=out16),
                                                      'bf16', flop),
            'int8 GEMM (torch._int_mm)': Row(lambda: torch._int_mm(a8, b8), 'int8', flop)}


def synthetic_batch(scope: str, height: int, width: int, seed: int = 0) -> dict:
    """One random uint8 image of ``height`` x ``width`` as the test dataloader
    of an mmdet or mmseg config yields it after its pipeline (``inputs``:
    list of (3, H, W) uint8; ``data_samples``: the package's data sample with
    the metas its ``predict`` reads, as if the pipeline's resize had made that
    size from an image of that size).

    Raises:
        ValueError: a scope other than 'mmdet' or 'mmseg'.
    """
    generator = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=generator)
    metas = dict(img_path='synthetic.png', img_id=0, ori_shape=(height, width),
                 img_shape=(height, width), scale_factor=(1.0, 1.0))
    if scope == 'mmdet':
        from mmdet.structures import DetDataSample
        sample = DetDataSample(metainfo=metas)
    elif scope == 'mmseg':
        from mmseg.structures import SegDataSample
        sample = SegDataSample(metainfo=dict(metas, reduce_zero_label=False))
    else:
        raise ValueError(f'synthetic_batch makes mmdet or mmseg batches, not {scope!r}')
    return {'inputs': [image], 'data_samples': [sample]}


def whole_model_rows(cfg, shape: Tuple[int, int], work_dir: str,
                     backends: Sequence[str] = ('onnxruntime', 'openvino'),
                     bf16: bool = True) -> Tuple[Dict[str, Row], Dict[str, object]]:
    """The whole model of ``cfg`` (mmdet or mmseg; random weights, seed 0) on
    one :func:`synthetic_batch` image of ``shape`` (H, W), as PyTorch eager
    (``test_step``) and as a deployed folder per backend (``test_step`` of
    :class:`~lightvit_mm.deploy.DeployedModel`; exported at the size the data
    preprocessor pads ``shape`` to, in fp32, and with ``bf16`` also
    OpenVINO's bf16), all with the same weights.

    Returns:
        tuple: (rows, models): rows by name; the model each row runs (the
        PyTorch model or the DeployedModel), for :func:`time_parts`.
    """
    from .deployed_model import DeployedModel
    from .exporter import build_model, export_model
    from .graphs import task_of
    from .manifest import TASKS
    torch.manual_seed(0)
    model = build_model(cfg, None)
    batch = synthetic_batch(TASKS[task_of(model)], *shape)
    checkpoint = osp.join(work_dir, 'random_weights.pth')
    torch.save({'state_dict': model.state_dict()}, checkpoint)

    def step(runner):
        def call():
            with torch.no_grad():
                return runner.test_step(copy.deepcopy(batch))
        return call

    rows, models = {'PyTorch eager fp32': Row(step(model), 'fp32')}, {}
    models['PyTorch eager fp32'] = model
    variants = [(b, 'fp32') for b in backends]
    if bf16 and 'openvino' in backends:
        variants.append(('openvino', 'bf16'))
    names = {'onnxruntime': 'ONNX Runtime', 'openvino': 'OpenVINO'}
    for backend, precision in variants:
        folder = osp.join(work_dir, f'{backend}_{precision}')
        export_model(cfg, checkpoint, backend, folder, precision=precision,
                     batches=[copy.deepcopy(batch)])  # at the preprocessed (padded) size
        deployed = DeployedModel(folder)
        note = _bf16_note('openvino') if precision == 'bf16' else ''
        name = f'{names[backend]} {precision}{note}'
        rows[name] = Row(step(deployed), deployed.precision)
        models[name] = deployed
    return rows, models


#: the parts of a PyTorch model :func:`time_parts` times (attribute paths)
PARTS = ('backbone', 'neck', 'rpn_head', 'bbox_head', 'roi_head.bbox_head', 'roi_head.mask_head',
         'decode_head', 'auxiliary_head')


def time_parts(call: Callable[[], object], model: nn.Module, repeats: int = 3) -> Dict[str, float]:
    """Where the time of ``call`` goes, in ms per call (median of ``repeats``
    calls): each part of a PyTorch ``model`` (:data:`PARTS`, timed around
    its ``forward``, however it is called) or each graph of a DeployedModel
    (its ``run_graph``), and under 'rest' what lies outside them: data preprocessor, and the
    package's post-processing (anchors, proposals, NMS, RoIAlign, mask
    pasting, resizing)."""
    from .graphs import get_owner
    spent: Dict[str, List[float]] = defaultdict(list)
    current: Dict[str, float] = defaultdict(float)
    undo = []
    if hasattr(model, 'run_graph'):
        original = model.run_graph

        def timed(name, tensors):
            start = time.perf_counter()
            try:
                return original(name, tensors)
            finally:
                current[name] += time.perf_counter() - start
        model.run_graph = timed
        undo.append(lambda: delattr(model, 'run_graph'))
    else:
        for path in PARTS:
            try:
                part = get_owner(model, path)
            except AttributeError:
                continue
            if part is None:
                continue
            # the instance's forward, not hooks: mmseg's decode head calls self.forward
            original_forward = part.forward

            def timed_forward(*args, _forward=original_forward, _path=path, **kwargs):
                start = time.perf_counter()
                try:
                    return _forward(*args, **kwargs)
                finally:
                    current[_path] += time.perf_counter() - start
            part.forward = timed_forward
            undo.append(lambda part=part: delattr(part, 'forward'))
    try:
        for _ in range(repeats):
            current.clear()
            start = time.perf_counter()
            call()
            total = time.perf_counter() - start
            for name, seconds in current.items():
                spent[name].append(seconds)
            spent['rest'].append(total - sum(current.values()))
            spent['total'].append(total)
    finally:
        for fn in undo:
            fn()
    return {name: 1e3 * sorted(v)[len(v) // 2] for name, v in spent.items()}

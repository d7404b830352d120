# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""INT8 post-training static quantization of a deployed model's graphs
(``export.py --precision int8 [--calib-images N]``).

Calibration: the first ``N`` images of the config's *training* set (default
:data:`CALIB_IMAGES`), through the *test* pipeline and the model's data
preprocessor, brought to the export size; each graph is calibrated on the
inputs it gets while the PyTorch model predicts on them, batch by batch (for
the RoI heads at most :data:`CALIB_ROIS` RoIs of each batch, spread evenly
over its list).

Each backend's own tool quantizes its graphs:

- OpenVINO: NNCF's ``nncf.quantize`` on the IR (``ModelType.TRANSFORMER``:
  quantizes the inputs of convolutions, matrix products and fully-connected
  layers, and keeps LayerNorm, Softmax and GELU in f32; symmetric per-channel
  int8 weights, int8 activations, min-max statistics), saved as an IR with
  FakeQuantize operations that OpenVINO's CPU plugin runs in int8;
- ONNX Runtime: ``onnxruntime.quantization.quantize_static`` (QDQ format)
  on the inputs of convolutions and matrix products only (its default, every
  operation type, doubled the error), per-channel int8 weights, symmetric int8
  activations, min-max calibration. (NNCF's own ONNX backend stopped in its
  SmoothQuant step on these graphs, nncf 3.4.0.)

On a random-weight LightViT-T backbone (224x224, batch 2, 4 calibration
batches) the relative L2 error of the three stage outputs against fp32 was
0.07 / 0.16 / 0.16 with NNCF in OpenVINO and 0.06 / 0.22 / 0.27 with
``quantize_static`` in ONNX Runtime (0.10 / 0.28 / 0.36 with uint8
activations; 0.33 / 0.35 / 0.38 with every operation type quantized);
keeping the stem in fp32 changed NNCF's by less than 0.001 (2-core AMD EPYC,
shared; docs/deployment.md has the trained models' accuracy).

Both keep the nodes of :data:`KEEP_FP32` (the LightViT stem) in fp32, the
libraries' way: NNCF's ``IgnoredScope(patterns=...)`` and ``quantize_static``'s
``nodes_to_exclude``; in a classifier's graph NNCF also keeps the neck and
head (:data:`CLASSIFIER_KEEP_FP32`).
"""
import copy
import os
import re
from typing import Dict, List, Sequence

import numpy as np
import torch

#: default number of calibration images
CALIB_IMAGES = 128
#: largest number of RoIs of one batch kept as calibration input of the RoI heads
CALIB_ROIS = 32
#: regular expressions of ONNX / OpenVINO node names kept in fp32: the
#: LightViT stem (``backbone.patch_embed``: three stride-2 convolutions on the
#: image, folded BatchNorms and the projection)
KEEP_FP32 = (r'.*patch_embed.*', )
#: what NNCF also keeps in fp32 in a classifier's ``scores`` graph: its neck
#: (``LightViTClsNeck``: norm, Linear + LayerNorm + GELU, token mean) and head.
#: Quantized, they cost the trained digits classifier 10.2 top-1 points
#: (83.0 -> 72.8); kept in fp32, none (83.0). ONNX Runtime's quantize_static
#: kept 83.0 with them quantized, so it quantizes them.
CLASSIFIER_KEEP_FP32 = (r'.*/neck/.*', r'.*/head/.*')
#: the ONNX operation types whose inputs ``quantize_static`` quantizes
ONNX_QUANTIZED_OPS = ('Conv', 'MatMul', 'Gemm')
#: which library quantizes which backend's graphs
METHODS = {'openvino': 'nncf.quantize (ModelType.TRANSFORMER)',
           'onnxruntime': 'onnxruntime.quantization.quantize_static (QDQ)'}


def calibration_config(cfg):
    """A copy of ``cfg`` whose test dataloader reads the training set with
    the test pipeline (so :func:`lightvit_mm.deploy.exporter.test_batches`
    gives calibration images).

    Raises:
        ValueError: the config has no training dataloader.
    """
    if not cfg.get('train_dataloader'):
        raise ValueError('int8 calibration reads the training set, and this config has no '
                         'train_dataloader')
    cfg = copy.deepcopy(cfg)
    dataset = copy.deepcopy(cfg.train_dataloader.dataset)
    inner = dataset
    while 'pipeline' not in inner and isinstance(inner.get('dataset'), dict):
        inner = inner['dataset']  # dataset wrappers (RepeatDataset, ...)
    inner['pipeline'] = copy.deepcopy(cfg.test_dataloader.dataset.pipeline)
    inner['test_mode'] = True  # no filtering of images without annotations
    cfg.test_dataloader.dataset = dataset
    return cfg


def calibration_data(model, specs, cfg, num_images: int, task: str,
                     policy: dict) -> Dict[str, List[List[np.ndarray]]]:
    """The calibration inputs of every graph (graph name -> list of its flat
    numpy inputs): the graphs' inputs while the PyTorch ``model`` predicts on
    the first ``num_images`` training images (:func:`calibration_config`),
    recorded batch by batch and thinned at once (:func:`calibration_inputs`),
    so the RoI features of all proposals are never held together.

    Raises:
        ValueError: ``num_images`` < 1.
    """
    from .exporter import record, test_batches
    if num_images < 1:
        raise ValueError(f'int8 needs at least 1 calibration image, got {num_images}')
    data = {spec.name: [] for spec in specs}
    for batch in test_batches(calibration_config(cfg), num_images):
        calls = record(model, specs, [batch], task, policy)
        for spec in specs:
            data[spec.name] += calibration_inputs(calls[spec.name], spec.dim0)
    return data


def calibration_inputs(calls: Sequence[tuple], dim0: str,
                       max_rois: int = CALIB_ROIS) -> List[List[np.ndarray]]:
    """The flat numpy inputs of every recorded call of one graph; for a graph
    over RoIs (``dim0 == 'num_rois'``) at most ``max_rois`` RoIs of each
    call, evenly spaced; for one exported for single images (``dim0 ==
    ''``) one item per image."""
    from .graphs import flatten
    items = []
    for args in calls:
        tensors = [t.detach().float().contiguous() for t in flatten(args)]
        count = tensors[0].shape[0]
        if dim0 == 'num_rois' and count > max_rois:
            keep = torch.linspace(0, count - 1, max_rois).round().long()
            tensors = [t[keep] for t in tensors]
        if dim0 == '':
            items += [[t[i:i + 1].numpy() for t in tensors] for i in range(count)]
        elif count:
            items.append([t.numpy() for t in tensors])
    return items


def quantize_openvino(xml: str, calibration: List[List[np.ndarray]],
                      keep_fp32: Sequence[str] = KEEP_FP32) -> Dict[str, object]:
    """Quantize the OpenVINO IR ``xml`` (and its ``.bin``) in place with
    NNCF, calibrated on ``calibration`` (lists of the graph's inputs).

    Returns:
        dict: what was done, for ``deploy.json`` (method, number of
        calibration items, nodes kept in fp32, number of FakeQuantize nodes).

    Raises:
        ImportError: nncf is not installed.
    """
    import nncf
    import openvino as ov
    model = ov.Core().read_model(xml)
    matched = [op.get_friendly_name() for op in model.get_ops()
               if any(re.fullmatch(p, op.get_friendly_name()) for p in keep_fp32)]
    quantized = nncf.quantize(
        model, nncf.Dataset(calibration), model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(calibration),
        ignored_scope=nncf.IgnoredScope(patterns=list(keep_fp32), validate=False))
    os.remove(xml)
    os.remove(xml[:-len('.xml')] + '.bin')
    ov.save_model(quantized, xml, compress_to_fp16=False)
    fake_quantize = sum(op.get_type_name() == 'FakeQuantize' for op in quantized.get_ops())
    return {'method': METHODS['openvino'], 'nncf': nncf.__version__,
            'calibration_items': len(calibration), 'kept_fp32': list(keep_fp32),
            'kept_fp32_nodes': len(matched), 'quantized_inputs': fake_quantize}


def quantize_onnx(path: str, calibration: List[List[np.ndarray]],
                  keep_fp32: Sequence[str] = KEEP_FP32) -> Dict[str, object]:
    """Quantize the ONNX file ``path`` in place with ONNX Runtime's
    ``quantize_static`` (QDQ), calibrated on ``calibration``.

    Returns:
        dict: what was done, for ``deploy.json`` (method, calibration items,
        nodes kept in fp32, number of QuantizeLinear nodes).
    """
    import onnx
    import onnxruntime
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    model = onnx.load(path)
    names = [i.name for i in model.graph.input]
    excluded = [n.name for n in model.graph.node
                if any(re.fullmatch(p, n.name) for p in keep_fp32)]

    class Reader(CalibrationDataReader):  # the calibration inputs, one dict per item
        def __init__(self):
            self.items = iter([dict(zip(names, item)) for item in calibration])

        def get_next(self):
            return next(self.items, None)

    tmp = path + '.int8.onnx'
    quantize_static(path, tmp, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=excluded,
                    op_types_to_quantize=list(ONNX_QUANTIZED_OPS),
                    extra_options={'ActivationSymmetric': True})
    os.replace(tmp, path)
    quantize_linear = sum(n.op_type == 'QuantizeLinear' for n in onnx.load(path).graph.node)
    return {'method': METHODS['onnxruntime'], 'onnxruntime': onnxruntime.__version__,
            'calibration_items': len(calibration), 'kept_fp32': list(keep_fp32),
            'kept_fp32_nodes': len(excluded), 'quantized_inputs': quantize_linear}


def quantize_graph(backend: str, paths: Sequence[str],
                   calibration: List[List[np.ndarray]],
                   classifier: bool = False) -> Dict[str, object]:
    """Quantize one exported graph (``paths``: ``[onnx]`` or ``[xml, bin]``)
    in place with its backend's tool (module docstring); ``classifier``: the
    graph is a classifier's ``scores``, whose neck and head NNCF keeps in
    fp32 (:data:`CLASSIFIER_KEEP_FP32`).

    Raises:
        ValueError: no calibration input, or an unknown backend.
    """
    if not calibration:
        raise ValueError(f'{paths[0]}: no calibration input recorded (no detections on the '
                         'calibration images?); use more --calib-images')
    if backend == 'openvino':
        keep = KEEP_FP32 + (CLASSIFIER_KEEP_FP32 if classifier else ())
        return quantize_openvino(paths[0], calibration, keep)
    if backend == 'onnxruntime':
        return quantize_onnx(paths[0], calibration)
    raise ValueError(f'unknown backend {backend!r}; expected openvino or onnxruntime')

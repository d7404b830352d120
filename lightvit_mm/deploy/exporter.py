# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""Export a trained OpenMMLab model whole into a deployed-model folder, and
check the folder against PyTorch (``tools/deployment/export.py``).

Steps of :func:`export_model`:

1. build the model of the config, load the checkpoint (weights-only,
   strict); on a copy, switch the LightViT backbone to deploy mode (folded
   stem BatchNorms, fixed position bias; eval outputs within 1e-5) and
   replace modules the exporter cannot write (:mod:`lightvit_mm.deploy.rewrites`);
2. run it on the first images of the config's test dataloader, recording
   the inputs of each graph (:mod:`lightvit_mm.deploy.graphs`);
3. export each graph with torch's exporter (``torch.onnx.export``) at the
   recorded inputs, first dimension dynamic (batch, or number of RoIs),
   and for OpenVINO convert it to IR (fp32); for ``precision='int8'``
   quantize it, calibrated on training images (:mod:`lightvit_mm.deploy.quantize`);
4. write ``deploy.json`` (:mod:`lightvit_mm.deploy.manifest`);
5. load the folder with :class:`~lightvit_mm.deploy.DeployedModel` and
   compare every graph's outputs with PyTorch's on the recorded inputs
   (:func:`compare`).
"""
import copy
import os
import os.path as osp
import platform
import sys
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.registry import DefaultScope

from .backends import backend_versions, convert_onnx_to_openvino
from .deployed_model import DeployedModel, fit_input
from .graphs import CallRecorder, GraphModule, flatten, get_owner, graph_specs, structure, task_of
from .manifest import FORMAT, FORMAT_VERSION, TASKS, sha256_of, write_manifest
from .precision import check_precision, cpu_capabilities
from .quantize import CALIB_IMAGES, calibration_data, quantize_graph
from .rewrites import rewrite_for_export
from .safe_config import to_data

#: ONNX opset of the exported graphs (the attention needs >= 14)
OPSET = 18
#: a graph output passes when max|deployed - PyTorch| <= TOLERANCE * max(1, max|PyTorch|)
TOLERANCE = 1e-3
#: the same check's default tolerance for each precision (bf16 and int8: catches broken
#: graphs, not accuracy; measure that with tools/deployment/test_deployed.py)
TOLERANCES = {'fp32': TOLERANCE, 'bf16': 5e-2, 'int8': 2.5e-1}


def build_model(cfg: Config, checkpoint: Optional[str]) -> nn.Module:
    """The model of ``cfg`` in eval mode, in its package's scope, with the
    checkpoint's weights (strict: mismatched keys raise) or random ones.

    The config's top-level ``data_preprocessor`` goes into the model config
    where the model has none, as mmengine's Runner does.
    """
    from mmengine.registry import MODELS
    from mmengine.runner import load_checkpoint

    import lightvit_mm  # noqa: F401
    model_cfg = copy.deepcopy(cfg.model)
    if cfg.get('data_preprocessor') is not None:
        model_cfg.setdefault('data_preprocessor', copy.deepcopy(cfg.data_preprocessor))
    model_cfg.pop('init_cfg', None)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(model_cfg)
        if checkpoint:
            load_checkpoint(model, checkpoint, map_location='cpu', strict=True)
    return model.eval()


def test_batches(cfg: Config, num_images: int) -> List[dict]:
    """The first ``num_images`` images of ``cfg``'s test dataloader, as
    batches of the loader's batch size (no worker processes)."""
    from mmengine.runner import Runner
    loader_cfg = copy.deepcopy(cfg.test_dataloader)
    loader_cfg.update(num_workers=0, persistent_workers=False)
    loader_cfg['sampler'] = dict(type='DefaultSampler', shuffle=False)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        loader = Runner.build_dataloader(loader_cfg)
    batches, seen = [], 0
    for batch in loader:
        keep = min(len(batch['inputs']), num_images - seen)
        batches.append({k: v[:keep] for k, v in batch.items()})
        seen += keep
        if seen >= num_images:
            break
    return batches


def preprocess(model: nn.Module, batch: dict, task: str, policy: dict) -> Tuple:
    """(inputs, data_samples) of ``batch`` after the model's data
    preprocessor and :func:`~lightvit_mm.deploy.deployed_model.fit_input`."""
    data = model.data_preprocessor(copy.deepcopy(batch), False)
    samples = data.get('data_samples')
    return fit_input(data['inputs'], samples, task, policy), samples


def record(model: nn.Module, specs, batches: Sequence[dict], task: str,
           policy: dict) -> Dict[str, List[tuple]]:
    """The arguments of every call of each graph while ``model`` predicts on
    ``batches`` (graph name -> list of argument tuples)."""
    calls = {s.name: [] for s in specs}
    with torch.no_grad():
        for batch in batches:
            inputs, samples = preprocess(model, batch, task, policy)
            with CallRecorder(model, specs) as recorder:
                model(inputs, samples, mode='predict')
            for name, args in recorder.calls.items():
                calls[name] += args
    return calls


def _at_least_two(args: tuple) -> tuple:
    """``args`` with every tensor's first dimension repeated to at least 2
    (an example of size 1 would fix a dynamic dimension to 1 in the export)."""
    def grow(obj):
        if isinstance(obj, torch.Tensor) and obj.shape[0] < 2:
            return obj.repeat(2, *([1] * (obj.dim() - 1)))[:max(2, obj.shape[0])]
        if isinstance(obj, (list, tuple)):
            return type(obj)(grow(o) for o in obj)
        return obj
    return grow(args)


def export_onnx(module: GraphModule, args: tuple, path: str, dim0: str) -> Tuple[int, int]:
    """Export ``module`` at the example ``args`` to the ONNX file ``path``
    (opset :data:`OPSET`, first dimension of every input and output dynamic,
    named ``dim0``, or 1 when ``dim0`` is ''); return (number of inputs,
    number of outputs).

    torch's TorchScript-based exporter is used (``dynamo=False``): it
    records the first dimension symbolically and runs the model as eager
    PyTorch code at the example size, so the backbone's window-padding
    ``if``s take the branch of that size (the export size is static).
    """
    inputs = flatten(_at_least_two(args)) if dim0 else [t[:1] for t in flatten(args)]
    with torch.no_grad():
        outputs = module(*inputs)
    input_names = [f'input{i}' for i in range(len(inputs))]
    output_names = [f'output{i}' for i in range(len(outputs))]
    dynamic_axes = {name: {0: dim0} for name in input_names + output_names} if dim0 else None
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.onnx.export(module, tuple(inputs), path, dynamo=False, opset_version=OPSET,
                          input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic_axes, do_constant_folding=True)
    return len(inputs), len(outputs)


def _versions(backend: str, scope: str) -> dict:
    import importlib

    import lightvit_mm
    versions = {'lightvit_mm': lightvit_mm.__version__, 'torch': torch.__version__,
                'python': platform.python_version()}
    versions[scope] = importlib.import_module(scope).__version__
    versions.update(backend_versions(backend))
    return versions


def _normalisation(model_cfg: dict) -> dict:
    """Mean, std and channel order of the model's data preprocessor."""
    pre = model_cfg.get('data_preprocessor') or {}
    return {'mean': pre.get('mean'), 'std': pre.get('std'),
            'bgr_to_rgb': bool(pre.get('bgr_to_rgb', pre.get('to_rgb', False))),
            'pad_size_divisor': pre.get('pad_size_divisor', 1), 'size': pre.get('size'),
            'applied_by': 'the data preprocessor of "model" (PyTorch), before the graphs'}


def export_model(cfg: Config, checkpoint: Optional[str], backend: str, work_dir: str,
                 shape: Optional[Tuple[int, int]] = None, num_images: int = 4,
                 precision: str = 'fp32', calib_images: int = CALIB_IMAGES,
                 batches: Optional[List[dict]] = None) -> dict:
    """Export the model of ``cfg`` with ``checkpoint`` into ``work_dir``.

    Args:
        cfg (Config): An mmpretrain / mmseg / mmdet config (with its test
            dataloader reachable: its images are the export and check inputs).
        checkpoint (str, optional): The weights; None keeps random ones
            (for tests).
        backend (str): 'onnxruntime' or 'openvino'.
        work_dir (str): Output folder (created; files of an earlier export
            with the same names are replaced).
        shape (tuple[int, int], optional): The static input size (H, W).
            Defaults to the size of the first test batch after the
            pipeline and data preprocessor.
        num_images (int): Test images used. Defaults to 4.
        precision (str): 'fp32', 'bf16' (OpenVINO's bf16 inference hint,
            recorded in deploy.json) or 'int8' (graphs quantized after
            calibration, :mod:`lightvit_mm.deploy.quantize`); see
            :mod:`lightvit_mm.deploy.precision`. Defaults to 'fp32'.
        calib_images (int): Training images the int8 quantization is
            calibrated on. Defaults to :data:`~lightvit_mm.deploy.quantize.CALIB_IMAGES`.
        batches (list[dict], optional): Batches (as the test dataloader
            yields them) to export and check with instead of the test
            images; the class names then come from the dataset class's
            ``METAINFO``, so no dataset file is read (the benchmark's
            synthetic images). fp32 and bf16 only. Defaults to None.

    Returns:
        dict: The manifest, plus under ``'_calls'`` the recorded graph
        inputs (for :func:`compare`; not written to deploy.json).

    Raises:
        NotImplementedError: a model kind that is not exported.
        ValueError: unknown backend or precision, bf16 for ONNX Runtime,
            int8 with ``batches`` (calibration reads the training set).
    """
    if backend not in ('onnxruntime', 'openvino'):
        raise ValueError(f'unknown backend {backend!r}; expected onnxruntime or openvino')
    check_precision(precision, backend)
    if batches is not None and precision == 'int8':
        raise ValueError('int8 is calibrated on the training set of the config; it cannot be '
                         'exported from given batches')
    model = build_model(cfg, checkpoint)
    task = task_of(model)
    specs = graph_specs(model)
    from_dataset = batches is None
    batches = test_batches(cfg, num_images) if from_dataset else batches
    if shape is None:
        shape = tuple(model.data_preprocessor(copy.deepcopy(batches[0]),
                                              False)['inputs'].shape[2:])
    policy = {'policy': 'static', 'shape': [int(shape[0]), int(shape[1])], 'channels': 3,
              'layout': 'NCHW', 'batch': 'dynamic'}
    export = copy.deepcopy(model)
    if hasattr(getattr(export, 'backbone', None), 'switch_to_deploy'):
        export.backbone.switch_to_deploy()
    rewrite_for_export(export)
    calls = record(model, specs, batches, task, policy)
    if precision == 'int8':  # the graphs' inputs on the calibration images
        calib = calibration_data(model, specs, cfg, calib_images, task, policy)
    quantization = {}
    os.makedirs(work_dir, exist_ok=True)
    graphs, files = {}, {}
    for spec in specs:
        if not calls[spec.name]:
            raise RuntimeError(f'{spec.name} was never called on the {num_images} test images '
                               '(no detections?); use more images (--num-images)')
        args = calls[spec.name][0]
        onnx_name = f'{spec.name}.onnx'
        module = GraphModule(export, spec, args).eval()
        num_in, num_out = export_onnx(module, args, osp.join(work_dir, onnx_name), spec.dim0)
        if spec.kind == 'scores':  # the classifier's scores are the prediction itself
            tree = list(range(num_out))
        else:  # the nesting of the replaced method's outputs, for the runtime
            with torch.no_grad():
                tree = structure(getattr(get_owner(model, spec.owner), spec.method)(*args))
        if backend == 'openvino':
            names = [osp.basename(p) for p in convert_onnx_to_openvino(
                osp.join(work_dir, onnx_name), osp.join(work_dir, f'{spec.name}.xml'))]
            os.remove(osp.join(work_dir, onnx_name))
        else:
            names = [onnx_name]
        if precision == 'int8':
            quantization[spec.name] = quantize_graph(
                backend, [osp.join(work_dir, n) for n in names], calib[spec.name],
                classifier=spec.kind == 'scores')
        graphs[spec.name] = dict(files=names, owner=spec.owner, method=spec.method,
                                 kind=spec.kind, dim0=spec.dim0, num_inputs=num_in,
                                 outputs=tree)
        files.update({n: sha256_of(osp.join(work_dir, n)) for n in names})
    model_cfg = copy.deepcopy(cfg.model)
    if cfg.get('data_preprocessor') is not None:
        model_cfg.setdefault('data_preprocessor', copy.deepcopy(cfg.data_preprocessor))
    model_data = to_data(model_cfg)
    dataset_meta = to_data(_dataset_meta(cfg, from_dataset))
    manifest = {
        'format': FORMAT, 'format_version': FORMAT_VERSION, 'task': task, 'backend': backend,
        'scope': TASKS[task], 'input': policy, 'normalisation': _normalisation(model_data),
        'classes': dataset_meta.get('classes'), 'dataset_meta': dataset_meta, 'opset': OPSET,
        'exporter': 'torch.onnx.export(dynamo=False)', 'versions': _versions(backend, TASKS[task]),
        'checkpoint': ({'file': osp.basename(checkpoint), 'sha256': sha256_of(checkpoint)}
                       if checkpoint else None),
        'model': model_data, 'graphs': graphs, 'files': files, 'precision': precision,
        'quantization': quantization or None,
        'exported_on': {'machine': platform.machine(), 'system': platform.system(),
                        'cpu': cpu_capabilities().describe(), 'argv': sys.argv[1:]},
    }
    write_manifest(work_dir, manifest)
    return dict(manifest, _calls=calls, _model=model, _specs=specs)


def _dataset_meta(cfg: Config, from_dataset: bool = True) -> dict:
    """``classes`` (and ``palette``) of the config's test dataset, built as the
    dataloader builds it, or with ``from_dataset=False`` its class's
    ``METAINFO`` updated by the config's ``metainfo`` (no file read)."""
    from mmengine.registry import DATASETS
    dataset_cfg = copy.deepcopy(cfg.test_dataloader.dataset)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        if from_dataset:
            meta = DATASETS.build(dataset_cfg).metainfo
        else:  # the class's METAINFO as the config's metainfo overrides it
            meta = dict(getattr(DATASETS.get(dataset_cfg['type']), 'METAINFO', {}))
            meta.update(dataset_cfg.get('metainfo') or {})
    return {k: meta[k] for k in ('classes', 'palette') if k in meta}


def compare(work_dir: str, model: nn.Module, specs, calls: Dict[str, List[tuple]],
            tolerance: float = TOLERANCE) -> Dict[str, List[float]]:
    """Load ``work_dir`` as a :class:`DeployedModel` and compare each graph's
    outputs with PyTorch's (``model``, not switched to deploy mode) on the
    recorded inputs.

    Returns:
        dict: graph name -> for each flat output, max |deployed - PyTorch|
        over all calls, divided by max(1, max |PyTorch|) (so a pass is
        ``<= tolerance``).
    """
    deployed = DeployedModel(work_dir)
    errors = {}
    for spec in specs:
        worst = None
        for args in calls[spec.name]:
            tensors = flatten(args)
            with torch.no_grad():
                expected = GraphModule(model, spec, args)(*tensors)
            got = deployed.run_graph(spec.name, tensors)
            diffs = [float((g - e).abs().max() / max(1.0, float(e.abs().max())))
                     if e.numel() else 0.0 for g, e in zip(got, expected)]
            worst = diffs if worst is None else [max(a, b) for a, b in zip(worst, diffs)]
        errors[spec.name] = worst
    return errors

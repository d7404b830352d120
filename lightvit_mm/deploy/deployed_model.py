# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""``DeployedModel``: a deployed-model folder as an mmengine model (a
*backend model* in mmdeploy's terms) whose predictions are the packages' own
data samples."""
import os.path as osp
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from mmengine.model import BaseModel

from .backends import open_graph
from .graphs import flatten, get_owner, unflatten
from .manifest import TASKS, read_manifest, resolve_inside
from .precision import runtime_precision
from .safe_config import build_from_data


def check_images(inputs, what: str = 'inputs') -> None:
    """Refuse anything but a non-empty batch of 3-channel images, each at
    least 1x1: a list of (3, H, W) tensors (a dataloader's ``inputs``) or one
    (B, 3, H, W) tensor.

    Raises:
        ValueError: empty batch, wrong number of dimensions or channels, or
            an empty image; the message names the image and its shape.
    """
    if isinstance(inputs, torch.Tensor):
        if inputs.dim() != 4:
            raise ValueError(f'{what}: expected a (B, 3, H, W) batch, got shape '
                             f'{tuple(inputs.shape)}')
        inputs = list(inputs)
    if not isinstance(inputs, (list, tuple)) or not inputs:
        raise ValueError(f'{what}: expected a non-empty list of (3, H, W) images, got '
                         f'{type(inputs).__name__} of length {len(inputs) if inputs else 0}')
    for i, img in enumerate(inputs):
        if not isinstance(img, torch.Tensor) or img.dim() != 3:
            shape = tuple(img.shape) if hasattr(img, 'shape') else type(img).__name__
            raise ValueError(f'{what}[{i}]: expected a (3, H, W) image tensor, got {shape}')
        if img.shape[0] != 3:
            raise ValueError(f'{what}[{i}]: the deployed model takes 3-channel (colour) images, '
                             f'got {img.shape[0]} channels (shape {tuple(img.shape)}); convert '
                             'grey or RGBA images to 3 channels first')
        if img.shape[1] == 0 or img.shape[2] == 0:
            raise ValueError(f'{what}[{i}]: empty image (shape {tuple(img.shape)})')


def fit_input(inputs: torch.Tensor, data_samples, task: str, policy: dict) -> torch.Tensor:
    """``inputs`` (B, 3, h, w), normalised and padded by the data
    preprocessor, brought to the graphs' input size (deploy.json ``input``).

    With the 'static' size policy, detection and segmentation inputs smaller
    than the export size are padded at the bottom and right with zeros (what
    the data preprocessors pad with), and ``data_samples``' metas say so
    (``batch_input_shape``/``pad_shape``; mmseg's ``img_padding_size``);
    classification inputs must have the export size.

    Raises:
        ValueError: the inputs do not fit the export size.
    """
    check_images(inputs)
    if policy['policy'] != 'static':
        return inputs
    (h, w), (H, W) = inputs.shape[2:], policy['shape']
    if (h, w) == (H, W):
        return inputs
    if task == 'classification' or h > H or w > W:
        raise ValueError(
            f'this model was exported at the static size {H}x{W}; the test pipeline gave '
            f'{h}x{w} (export again with --shape, or resize the images in the pipeline)')
    inputs = F.pad(inputs, (0, W - w, 0, H - h), value=0)
    for sample in data_samples or []:
        if task == 'segmentation':  # the keys mmseg's postprocess_result crops by
            key = 'img_padding_size' if 'img_padding_size' in sample.metainfo else 'padding_size'
            left, right, top, bottom = sample.metainfo.get(key, [0, 0, 0, 0])
            sample.set_metainfo({key: [left, right + W - w, top, bottom + H - h]})
        else:
            sample.set_metainfo(dict(batch_input_shape=(H, W), pad_shape=(H, W)))
    return inputs


class DeployedModel(BaseModel):
    """A model exported by ``tools/deployment/export.py``, run by ONNX Runtime
    or OpenVINO, with the OpenMMLab package's own pre- and post-processing.

    Loading checks the folder first (:func:`~lightvit_mm.deploy.manifest.read_manifest`:
    hashes, paths inside the folder, task, format version) and runs no code
    from it: the model config comes from ``deploy.json`` as data and is
    built only from registered names (:mod:`~lightvit_mm.deploy.safe_config`).
    That config gives the data preprocessor and a *weightless* copy of the
    model whose weighted parts are replaced by the backend graphs
    (:mod:`~lightvit_mm.deploy.graphs`); every weight is removed from the copy,
    so a part not replaced could not silently run with random weights.

    :meth:`test_step` and ``forward(..., mode='predict')`` return what the
    PyTorch model's ``predict`` returns: mmpretrain ``DataSample`` with
    ``pred_score``/``pred_label``, mmseg ``SegDataSample`` with
    ``seg_logits``/``pred_sem_seg``, mmdet ``DetDataSample`` with
    ``pred_instances`` (``bboxes`` (N, 4) in original-image pixels,
    ``scores``, ``labels``, ``masks`` (N, H, W) bool for instance
    segmentation), so ``Accuracy``, ``IoUMetric``, ``CocoMetric`` and the
    visualizers take them unchanged.

    Args:
        work_dir (str): The deployed-model folder.
        device (str): Only 'cpu'. Defaults to 'cpu'.
        task (str, optional): Refuse a folder exported for another task
            ('classification', 'segmentation', 'detection',
            'instance-segmentation'). Defaults to None (any).
        num_threads (int): Threads of the runtime; 0 lets it choose.

    Attributes:
        precision (str): The precision the graphs run in here: deploy.json's
            ``precision`` ('fp32' where it has none), except that 'bf16'
            runs as 'fp32', with a warning, where this CPU has no bf16 units
            (:func:`~lightvit_mm.deploy.precision.runtime_precision`).

    Raises:
        DeployedFolderError: the folder is refused (see ``read_manifest``).
        ValueError: the model config in deploy.json names unregistered
            types, or ``device`` is not 'cpu'.
        ImportError: the folder's backend is not installed.
    """

    def __init__(self, work_dir: str, device: str = 'cpu', task: Optional[str] = None,
                 num_threads: int = 0):
        if device != 'cpu':
            raise ValueError(f'DeployedModel runs on the CPU only; got device={device!r}')
        manifest = read_manifest(work_dir, task)
        scope = TASKS[manifest['task']]
        import lightvit_mm  # noqa: F401  (LightViT and its necks in every registry)
        skeleton = build_from_data(manifest['model'], scope).eval()
        super().__init__(data_preprocessor=skeleton.data_preprocessor)
        self.work_dir, self.manifest, self.task = work_dir, manifest, manifest['task']
        self.scope = scope
        self.dataset_meta = manifest.get('dataset_meta') or {}
        self.graphs = {}
        # bf16 falls back to fp32 with a warning where this CPU runs no bf16
        self.precision = runtime_precision(manifest.get('precision', 'fp32'),
                                           manifest['backend'])
        for name, graph in manifest['graphs'].items():
            paths = [resolve_inside(work_dir, f) for f in graph['files']]
            paths = [p for p in paths if osp.splitext(p)[1] in ('.onnx', '.xml', '.bin')]
            self.graphs[name] = open_graph(manifest['backend'], paths, num_threads,
                                           self.precision)
            if graph['kind'] != 'scores':  # the classifier's scores are the prediction
                setattr(get_owner(skeleton, graph['owner']), graph['method'],
                        self._runner(name, graph['outputs']))
        keep = {id(m) for m in skeleton.data_preprocessor.modules()}
        for module in skeleton.modules():  # weightless: the graphs hold every weight
            if id(module) not in keep:
                for key in list(module._parameters) + list(module._buffers):
                    getattr(module, '_parameters' if key in module._parameters
                            else '_buffers')[key] = None
        self.skeleton = skeleton

    def _runner(self, name: str, outputs):
        """A stand-in for the method graph ``name`` replaces: tensors in,
        backend, tensors out in the method's nesting ``outputs``."""
        def run(*args):
            return unflatten(self.run_graph(name, flatten(args)), outputs)

        return run

    def run_graph(self, name: str, tensors: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """The flat outputs of graph ``name`` on ``tensors`` (its flat inputs);
        a graph exported for one image (``dim0`` '') runs image by image."""
        graph = self.graphs[name]
        arrays = [t.detach().float().contiguous().numpy() for t in tensors]
        if self.manifest['graphs'][name]['dim0']:
            return [torch.from_numpy(a) for a in graph(arrays)]
        outs = [graph([a[i:i + 1] for a in arrays]) for i in range(len(arrays[0]))]
        return [torch.cat([torch.from_numpy(o[k]) for o in outs]) for k in range(len(outs[0]))]

    def test_step(self, data) -> list:
        check_images(data['inputs'] if isinstance(data, dict) else data)
        return super().test_step(data)

    val_step = test_step

    def forward(self, inputs: torch.Tensor, data_samples=None, mode: str = 'predict'):
        """Predict (the only mode). ``inputs``: (B, 3, H, W) from the data
        preprocessor; ``data_samples``: the batch's samples (their metas).

        Raises:
            ValueError: another mode, or bad inputs (:func:`check_images`).
        """
        if mode != 'predict':
            raise ValueError(f'a deployed model only predicts; got mode={mode!r}')
        inputs = fit_input(inputs, data_samples, self.task, self.manifest['input'])
        if self.task == 'classification':
            return self._classify(inputs, data_samples)
        if self.task == 'segmentation':
            return self.skeleton.predict(inputs, data_samples)
        return self.skeleton.predict(inputs, data_samples, rescale=True)

    def _classify(self, inputs: torch.Tensor, data_samples) -> list:
        """mmpretrain ``DataSample`` with the class scores (softmax, computed in
        the graph) and the top-1 label, as ``ClsHead.predict`` makes them."""
        from mmpretrain.structures import DataSample
        scores = self.run_graph('scores', [inputs])[0]
        labels = scores.argmax(dim=1, keepdim=True)
        samples = data_samples or [DataSample() for _ in range(len(scores))]
        for sample, score, label in zip(samples, scores, labels):
            sample.set_pred_score(score).set_pred_label(label)
        return samples

    def train(self, mode: bool = True):
        if mode:
            raise RuntimeError('a deployed model cannot be trained')
        return super().train(False)

    def extra_repr(self) -> str:
        return (f'task={self.task}, backend={self.manifest["backend"]}, '
                f'precision={self.precision}, graphs={list(self.graphs)}')


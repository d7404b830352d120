# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""Which parts of an OpenMMLab model become backend graphs, and how the
packages' own code calls them back.

Every part of the model that holds weights runs in a graph; everything
between and after the graphs is the package's own ``predict`` code, run on
a weightless copy of the model (:mod:`lightvit_mm.deploy.deployed_model`):

============================ ====================================================
task (model)                 graphs (the method each replaces)
============================ ====================================================
classification               ``scores``: softmax of ``model(x, mode='tensor')``
(mmpretrain ImageClassifier) (backbone, neck, head; the whole model)
segmentation                 ``encode_decode``: backbone, neck, decode head and the
(mmseg EncoderDecoder)       resize to the input size (whole-image mode)
detection (mmdet one-stage,  ``extract_feat`` (backbone + neck), ``bbox_head``
e.g. RetinaNet)              (its ``forward``: class scores and box deltas per level)
detection / instance-        ``extract_feat``, ``rpn_head``, ``roi_head.bbox_head``,
segmentation (mmdet two-     ``roi_head.mask_head`` (each head's ``forward``; the RoI
stage, e.g. Mask R-CNN)      heads on a dynamic number of RoIs)
============================ ====================================================

So mmdet's ``predict_by_feat`` (anchors, box decoding, score threshold,
NMS), its RoI extractors (mmcv ``RoIAlign``) and mask pasting, and mmseg's
``postprocess_result`` run as they do for the PyTorch model.
"""
from dataclasses import dataclass
from typing import Any, Dict, List, Sequence, Tuple

import torch
import torch.nn as nn


@dataclass
class GraphSpec:
    """One graph of a deployed model.

    Attributes:
        name (str): The graph's name (also its file's stem).
        owner (str): Attribute path of the module whose method the graph
            replaces ('' for the model itself, 'roi_head.bbox_head', ...).
        method (str): That method's name.
        kind (str): 'method' (the method as it is), 'scores' (softmax of the
            classifier's logits) or 'seg_logits' (``encode_decode`` resized to
            the graph's input size).
        dim0 (str): Name of the inputs' dynamic first dimension ('batch' or
            'num_rois'), or '' when the graph is exported for one image (batch 1)
            and run image by image: mmseg's pyramid pooling (adaptive average
            pooling) exports only with a static input shape.
    """
    name: str
    owner: str
    method: str
    kind: str = 'method'
    dim0: str = 'batch'


def task_of(model: nn.Module) -> str:
    """The deploy task of ``model`` ('classification', 'segmentation',
    'detection' or 'instance-segmentation').

    Raises:
        NotImplementedError: a model kind this exporter does not handle.
    """
    names = [cls.__name__ for cls in type(model).__mro__]
    if 'ImageClassifier' in names:
        return 'classification'
    if 'EncoderDecoder' in names:
        return 'segmentation'
    if 'SingleStageDetector' in names:
        return 'detection'
    if 'TwoStageDetector' in names:
        roi_head = model.roi_head
        if type(roi_head).__name__ != 'StandardRoIHead' or roi_head.with_shared_head:
            raise NotImplementedError(
                f'two-stage detectors with a {type(roi_head).__name__} (or a shared head) are not '
                'exported; StandardRoIHead (Faster/Mask R-CNN) is')
        return 'instance-segmentation' if roi_head.with_mask else 'detection'
    raise NotImplementedError(
        f'{type(model).__name__} is not exported; supported: mmpretrain ImageClassifier, mmseg '
        'EncoderDecoder, mmdet single-stage detectors and two-stage detectors with a '
        'StandardRoIHead')


def task_of_config(cfg) -> str:
    """The deploy task of the model of the config ``cfg``, read from its
    scope and model config (nothing is built)."""
    scope = cfg.get('default_scope')
    if scope == 'mmpretrain':
        return 'classification'
    if scope == 'mmseg':
        return 'segmentation'
    if scope == 'mmdet':
        roi_head = cfg.model.get('roi_head') or {}
        return 'instance-segmentation' if roi_head.get('mask_head') else 'detection'
    raise NotImplementedError(f'configs of the scope {scope!r} are not exported; supported: '
                              'mmpretrain, mmseg, mmdet')


def graph_specs(model: nn.Module) -> List[GraphSpec]:
    """The graphs of ``model`` (module docstring)."""
    task = task_of(model)
    if task == 'classification':
        return [GraphSpec('scores', '', 'extract_feat', kind='scores')]
    if task == 'segmentation':
        return [GraphSpec('encode_decode', '', 'encode_decode', kind='seg_logits')]
    specs = [GraphSpec('extract_feat', '', 'extract_feat')]
    if hasattr(model, 'rpn_head'):
        specs.append(GraphSpec('rpn_head', 'rpn_head', 'forward'))
        specs.append(GraphSpec('roi_head.bbox_head', 'roi_head.bbox_head', 'forward',
                               dim0='num_rois'))
        if model.roi_head.with_mask:
            specs.append(GraphSpec('roi_head.mask_head', 'roi_head.mask_head', 'forward',
                                   dim0='num_rois'))
    else:
        specs.append(GraphSpec('bbox_head', 'bbox_head', 'forward'))
    return specs


def get_owner(model: nn.Module, path: str) -> nn.Module:
    """The submodule of ``model`` at the attribute path ``path`` ('' is ``model``)."""
    for name in filter(None, path.split('.')):
        model = getattr(model, name)
    return model


# Nested outputs (tuples/lists of tensors) travel through a graph as a flat
# list; their structure is a JSON tree whose leaves are positions in it.

def flatten(obj: Any) -> List[torch.Tensor]:
    """The tensors of a nest of tuples/lists, depth first; other leaves are skipped."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for item in obj for t in flatten(item)]
    return []


def structure(obj: Any, start: int = 0) -> Any:
    """The JSON structure of the tensors of ``obj`` (see :func:`unflatten`)."""
    if isinstance(obj, torch.Tensor):
        return start
    tree, position = [], start
    for item in obj:
        tree.append(structure(item, position))
        position += len(flatten(item))
    return tree


def unflatten(flat: Sequence[Any], tree: Any) -> Any:
    """Rebuild the nest described by ``tree`` (an int: ``flat[tree]``; a list:
    a tuple of its children) from ``flat``."""
    if isinstance(tree, int):
        return flat[tree]
    return tuple(unflatten(flat, child) for child in tree)


def fill(template: Any, tensors: Sequence[torch.Tensor]) -> Any:
    """``template`` (a recorded call's arguments) with its tensors, in
    :func:`flatten` order, replaced by ``tensors``."""
    position = 0

    def rebuild(obj):
        nonlocal position
        if isinstance(obj, torch.Tensor):
            position += 1
            return tensors[position - 1]
        if isinstance(obj, (list, tuple)):
            return type(obj)(rebuild(item) for item in obj)
        return obj

    return rebuild(template)


class GraphModule(nn.Module):
    """What one graph computes, as a module over flat tensors, for export and
    as the PyTorch reference of the verification.

    Args:
        model (nn.Module): The PyTorch model (eval mode).
        spec (GraphSpec): The graph.
        template (tuple): The positional arguments of one recorded call of
            the method (their non-tensor parts, e.g. image metas, are kept).
    """

    def __init__(self, model: nn.Module, spec: GraphSpec, template: Tuple):
        super().__init__()
        self.model, self.spec, self.template = model, spec, template

    def forward(self, *tensors: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        if self.spec.kind == 'scores':
            return (self.model(tensors[0], mode='tensor').softmax(dim=1), )
        if self.spec.kind == 'seg_logits':
            # mmseg's decode head resizes to img_shape when it is a torch.Size
            metas = [dict(img_shape=tensors[0].shape[2:])]
            return tuple(flatten(self.model.encode_decode(tensors[0], metas)))
        method = getattr(get_owner(self.model, self.spec.owner), self.spec.method)
        return tuple(flatten(method(*fill(self.template, tensors))))


class CallRecorder:
    """Records the positional arguments of the calls of each spec's method
    while the PyTorch model predicts (a context manager).

    Attributes:
        calls (dict[str, list[tuple]]): graph name -> the arguments of each call.
    """

    def __init__(self, model: nn.Module, specs: Sequence[GraphSpec]):
        self.model, self.specs = model, list(specs)
        self.calls: Dict[str, List[tuple]] = {s.name: [] for s in self.specs}

    def __enter__(self):
        for spec in self.specs:
            owner = get_owner(self.model, spec.owner)
            original = getattr(owner, spec.method)

            def record(*args, _original=original, _name=spec.name, **kwargs):
                if kwargs:
                    raise NotImplementedError(f'{_name} called with keyword arguments')
                self.calls[_name].append(args)
                return _original(*args)

            setattr(owner, spec.method, record)
        return self

    def __exit__(self, *exc):
        for spec in self.specs:
            delattr(get_owner(self.model, spec.owner), spec.method)
        return False

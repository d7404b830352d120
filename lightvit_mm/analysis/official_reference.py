# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""Reference implementations of LightViT built with our weights, and the
checks that they compute what ours computes: used by
``tools/analysis/benchmark.py`` (before timing), ``tools/analysis/gpu_check.py``
and the GPU tests.

- The official code: ``detection/lightvit.py`` of a clone of
  https://github.com/hunto/LightViT, imported with stand-ins for its timm,
  mmcv 1.x and mmdet 2.x imports (none of those is needed; its source is never
  copied here).
- Our backbone at another git commit (``lightvit_mm/models/backbones/lightvit.py``
  read with ``git show``), with stand-ins for the package modules that moved
  since.

:func:`reference_builders` builds them from our model; :func:`check_same_outputs`
and :func:`check_same_gradients` compare; :func:`exact_fp32` turns TF32 off
while a comparison runs on a GPU.
"""
import contextlib
import copy
import importlib.util
import os
import os.path as osp
import subprocess
import sys
import tempfile
import types
from typing import Callable, Dict, Iterator, List, Optional

import torch
import torch.nn as nn

BASE = 'LightViT-T'
OFFICIAL = '(official code)'  # in the names of the official implementation's rows
DROP_PATH = 0.1  # LightViT's default stochastic depth, given to the official code too
#: the folder of this package, inside the git checkout that ``--ref`` reads
PACKAGE_DIR = osp.dirname(osp.dirname(osp.abspath(__file__)))


@contextlib.contextmanager
def _modules_replaced(stand_ins: Dict[str, types.ModuleType]) -> Iterator[None]:
    """``sys.modules`` with ``stand_ins`` in it while the context lasts; the
    modules they replaced (or their absence) restored after."""
    saved = {name: sys.modules.get(name) for name in stand_ins}
    sys.modules.update(stand_ins)
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name)
            else:
                sys.modules[name] = module


def _official_import_stand_ins():
    """Stand-ins for what the official ``detection/lightvit.py`` imports from
    timm, mmcv 1.x and mmdet 2.x, present only while it is imported."""
    from mmcv.cnn.bricks import DropPath
    from mmengine.model import BaseModule
    from mmengine.registry import Registry

    def no_op_decorator(*args, **kwargs):
        return lambda fn: fn

    layers = types.ModuleType('timm.models.layers')
    layers.DropPath, layers.trunc_normal_ = DropPath, nn.init.trunc_normal_
    layers.drop_path = None
    runner = types.ModuleType('mmcv.runner')
    runner.auto_fp16 = runner.force_fp32 = no_op_decorator
    runner.BaseModule = BaseModule
    builder = types.ModuleType('mmdet.models.builder')
    builder.BACKBONES = Registry('official LightViT backbones')
    return _modules_replaced({
        'timm': types.ModuleType('timm'), 'timm.models': types.ModuleType('timm.models'),
        'timm.models.layers': layers, 'mmcv.runner': runner, 'mmdet.models.builder': builder})


def _moved_module_stand_ins(source: str):
    """Old names of moved lightvit_mm modules, present only while a backbone
    of an older commit (its ``source``) is imported: ``lightvit_mm.checkpoint``
    (a module until the layout of fa6e4bf) and ``lightvit_mm.utils.checkpoint``
    (until the re-rooming of issue #23) stand for today's
    ``lightvit_mm.checkpoint.io`` together with the LightViT-specific loading
    that moved beside the model
    (``lightvit_mm.models.backbones.lightvit_weights``). A name an old
    backbone imports that has left both since raises the ImportError naming it."""
    from lightvit_mm.checkpoint import io
    from lightvit_mm.models.backbones import lightvit_weights
    checkpoint = types.ModuleType('lightvit_mm.utils.checkpoint')
    checkpoint.__dict__.update({k: v for k, v in vars(io).items() if not k.startswith('__')})
    checkpoint.__dict__.update(
        {k: v for k, v in vars(lightvit_weights).items() if not k.startswith('__')})
    utils = types.ModuleType('lightvit_mm.utils')
    utils.checkpoint = checkpoint
    stand_ins = {'lightvit_mm.utils': utils, 'lightvit_mm.utils.checkpoint': checkpoint}
    if 'from lightvit_mm.checkpoint import ' in source:  # the module, not today's package
        stand_ins['lightvit_mm.checkpoint'] = checkpoint
    return _modules_replaced(stand_ins)


def _import_file(path: str, name: str) -> types.ModuleType:
    """The Python file ``path`` imported as a module named ``name`` (not put
    in ``sys.modules``)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reference_builders(official: Optional[str], refs: List[str]) -> Dict[str, Callable]:
    """Builders of the reference backbones, by their benchmark row name
    (``'LightViT-T (official code)'``, ``'LightViT-T @ REF'``): each a
    function of our :class:`~lightvit_mm.LightViT` returning the reference
    with the same architecture, weights (a strict ``load_state_dict`` of ours),
    output stages and ``norm_eval``.

    Args:
        official (str, optional): A clone of github.com/hunto/LightViT; its
            ``detection/lightvit.py`` is imported (the official code's
            ``drop_path_rate`` is :data:`DROP_PATH`).
        refs (list[str]): Git refs of this repository (any ``git show``
            accepts); our backbone file at each one is imported.

    Raises:
        FileNotFoundError: ``official`` has no ``detection/lightvit.py``.
        RuntimeError: ``git show`` cannot read the backbone at a ref (for
            example when the package is not a git checkout).
    """
    builders = {}
    if official:
        path = osp.join(official, 'detection', 'lightvit.py')
        if not osp.isfile(path):
            raise FileNotFoundError(f'--official {official!r} has no detection/lightvit.py; '
                                    'pass a clone of github.com/hunto/LightViT')
        with _official_import_stand_ins():
            official_module = _import_file(path, 'official_lightvit')

        def build_official(ours):
            arch = ours.arch_settings
            model = official_module.LightViT(
                patch_size=8, embed_dims=arch['embed_dims'], num_layers=arch['depths'],
                num_heads=arch['num_heads'], mlp_ratios=arch['mlp_ratios'],
                num_tokens=arch['num_tokens'], out_indices=tuple(ours.out_indices),
                drop_path_rate=DROP_PATH, stem_norm_eval=ours.norm_eval)
            model.load_state_dict(ours.state_dict())
            return model
        builders[f'{BASE} {OFFICIAL}'] = build_official
    for ref in refs:
        source = subprocess.run(
            ['git', '-C', PACKAGE_DIR, 'show', f'{ref}:lightvit_mm/models/backbones/lightvit.py'],
            capture_output=True, text=True)
        if source.returncode:
            raise RuntimeError(f'cannot read the backbone at --ref {ref!r}: {source.stderr}')
        with tempfile.NamedTemporaryFile('w', suffix='.py', delete=False) as f:
            f.write(source.stdout)
        try:
            with _moved_module_stand_ins(source.stdout):
                module = _import_file(f.name, f'lightvit_at_{len(builders)}')
        finally:
            os.unlink(f.name)

        def build_ref(ours, module=module):
            model = module.LightViT(arch=ours.arch_settings, out_indices=tuple(ours.out_indices),
                                    norm_eval=ours.norm_eval)
            model.load_state_dict(ours.state_dict())
            return model
        builders[f'{BASE} @ {ref}'] = build_ref
    return builders


def official_classifier_builder(official_classification: str) -> Callable:
    """A builder of the official LightViT classifier with our weights: the
    ``LightViT`` of ``lib/models/lightvit.py`` in a clone of
    https://github.com/hunto/image_classification_sota (the code the paper's
    ImageNet models were trained with; imported with stand-ins for its timm
    imports), as a function of our mmpretrain ``ImageClassifier`` (LightViT,
    LightViTClsNeck, LinearClsHead) that returns the official model of the
    same architecture with its weights (a strict ``load_state_dict`` of ours
    renamed back to the official layout: ``backbone.*`` -> ``*``,
    ``neck.norm.*`` -> ``norm.*``, ``neck.proj.*`` -> ``neck.*``,
    ``head.fc.*`` -> ``head.*``).

    Raises:
        FileNotFoundError: the folder has no ``lib/models/lightvit.py``.
    """
    path = osp.join(official_classification, 'lib', 'models', 'lightvit.py')
    if not osp.isfile(path):
        raise FileNotFoundError(f'{official_classification!r} has no lib/models/lightvit.py; '
                                'pass a clone of github.com/hunto/image_classification_sota')
    from mmcv.cnn.bricks import DropPath
    layers = types.ModuleType('timm.models.layers')
    layers.DropPath, layers.trunc_normal_ = DropPath, nn.init.trunc_normal_
    layers.lecun_normal_ = nn.init.kaiming_normal_  # only its jax init uses it
    registry = types.ModuleType('timm.models.registry')
    registry.register_model = lambda fn: fn
    with _modules_replaced({'timm': types.ModuleType('timm'),
                            'timm.models': types.ModuleType('timm.models'),
                            'timm.models.layers': layers, 'timm.models.registry': registry}):
        module = _import_file(path, 'official_lightvit_classifier')
    renames = (('backbone.', ''), ('neck.norm.', 'norm.'), ('neck.proj.', 'neck.'),
               ('head.fc.', 'head.'))

    def build(ours: nn.Module) -> nn.Module:
        arch = ours.backbone.arch_settings
        model = module.LightViT(
            patch_size=8, num_classes=ours.head.num_classes, embed_dims=arch['embed_dims'],
            num_layers=arch['depths'], num_heads=arch['num_heads'],
            mlp_ratios=arch['mlp_ratios'], num_tokens=arch['num_tokens'],
            neck_dim=ours.head.in_channels)
        state = {}
        for key, value in ours.state_dict().items():
            old, new = next((o, n) for o, n in renames if key.startswith(o))
            state[new + key[len(old):]] = value
        model.load_state_dict(state)
        return model.eval()
    return build


def flat_outputs(out) -> List[torch.Tensor]:
    """The tensors of a model's output (a tensor, or nested tuples/lists of them), in order."""
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for item in out for t in flat_outputs(item)]


@contextlib.contextmanager
def exact_fp32() -> Iterator[None]:
    """TF32 off for cuDNN convolutions and CUDA matrix products while a
    reference check runs (cuDNN's default TF32 stem convolutions alone move
    LightViT-T's outputs by about 1e-4), restored after; no effect on CPU."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def weighted_grads(model: nn.Module, inputs: torch.Tensor):
    """One backward pass of ``model``'s outputs, each element weighted
    differently (``linspace(-1, 1)``; a plain sum has gradients of about 0
    through final LayerNorms): (outputs, detached, and the gradients of the
    parameters that got one, by name). ``model``'s gradients are reset first."""
    model.zero_grad(set_to_none=True)
    outs = flat_outputs(model(inputs))
    sum((o * torch.linspace(-1, 1, o.numel(), device=o.device, dtype=o.dtype).view_as(o)).sum()
        for o in outs).backward()
    return [o.detach() for o in outs], {n: p.grad for n, p in model.named_parameters()
                                        if p.grad is not None}


def check_same_gradients(reference: nn.Module, ours: nn.Module, inputs: torch.Tensor,
                         name: str):
    """Raise if one training step's parameter gradients of a reference differ
    from ours by more than 1e-4 relative (per parameter: largest absolute
    difference over largest absolute value); drop-path off for the check.

    Both run on float64 copies: in float32 the position-bias tables' gradients
    (sums over every window of terms that largely cancel) move by up to 1e-3
    relative from one run of the same code to the next, because the matrix
    products round differently with the buffers' alignment, which would hide
    a real difference or invent one.

    Raises:
        RuntimeError: names the parameter that differs most, and by how much.
    """
    grads = []
    for model in (reference, ours):
        model = copy.deepcopy(model).double()
        for module in model.modules():
            if hasattr(module, 'drop_prob'):
                module.drop_prob = 0.
        grads.append(weighted_grads(model.train(), inputs.double())[1])
    errors = {n: ((grads[0][n] - g).abs().max() / g.abs().max().clamp_min(1e-30)).item()
              for n, g in grads[1].items()}
    worst = max(errors, key=errors.get)
    if grads[0].keys() != grads[1].keys() or errors[worst] > 1e-4:
        raise RuntimeError(f'{name}: gradients differ from ours, {worst}: {errors[worst]:.1e} '
                           'relative')
    print(f'  {name}: float64 gradients equal ours within {errors[worst]:.1e} relative '
          f'({len(errors)} parameters)', file=sys.stderr)


def check_same_outputs(reference: nn.Module, ours: nn.Module, inputs: torch.Tensor, name: str):
    """Raise if a reference implementation disagrees with ours by more than
    1e-4 (fp32 with TF32 off, eval).

    Raises:
        RuntimeError: with the largest absolute difference.
    """
    with torch.inference_mode(), exact_fp32():
        ref_out = flat_outputs(reference.eval()(inputs))
        our_out = flat_outputs(ours.eval()(inputs))
    diff = max((a - b).abs().max().item() for a, b in zip(ref_out, our_out))
    if len(ref_out) != len(our_out) or diff > 1e-4:
        raise RuntimeError(f'{name} disagrees with lightvit_mm: max abs difference {diff:.2e}')
    print(f'  {name}: outputs equal ours within {diff:.1e}', file=sys.stderr)

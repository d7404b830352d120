# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""Export the LightViT backbone (optionally with its LightViTFPN neck) to ONNX
with dynamic batch, height and width, and check it with onnxruntime.

The backbone comes from a config (``model.backbone`` / ``model.neck`` of an
mmdet, mmseg or mmpretrain config) or from an arch name ('t', 'tiny', 's',
...; the neck is then the paper's: 256 channels, 5 levels, one transposed-conv
level). Weights: ``--checkpoint`` (an official LightViT checkpoint, or an
OpenMMLab one with ``backbone.``/``neck.`` prefixes), else random.

How the sizes stay dynamic: the exporter used is torch's TorchScript-based
one (``torch.onnx.export(dynamo=False)``), which records the padding amounts
(window padding in the attention, odd-size padding before patch merging) as
shape arithmetic, but records the Python ``if``s around them
(lightvit.py ``LightViTAttention.forward``: ``padded``, which pads, masks
the padding out of the global aggregation and crops;
``ResidualPatchMerging.forward``: ``if H % 2 or W % 2``) as the branch taken
for the example input. So the example input must take every padding branch;
if ``--shape`` does not, the export traces at the nearest larger width (or
height) that does and says so. The graph then pads by zero (and masks
nothing) where no padding is needed, and gives the eager outputs at every
size (checked below).
torch's newer exporter (``dynamo=True``, needs ``onnxscript``) fails on the
same ``if``s (torch.export specialises the size); see the project notes.

The ONNX model does not repeat LightViT's input checks: give it
(B, 3, H, W) float images of at least 8x8 pixels.

Examples:
    python tools/deployment/export_onnx.py tiny lightvit_t.onnx
    python tools/deployment/export_onnx.py \
        configs/mmdet/mask-rcnn_lightvit-t_lightvit-fpn_1x_coco.py out.onnx \
        --with-neck --shape 800 1216 --checkpoint work_dirs/.../iter_600.pth
"""
import argparse
import logging
import math
import os
import os.path as osp
import sys
import warnings
from typing import List, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.logging import MMLogger

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO not in sys.path:  # runnable as a plain script from any directory
    sys.path.insert(0, REPO)

from lightvit_mm import LightViT, LightViTFPN  # noqa: E402
from lightvit_mm.utils.checkpoint import extract_state_dict, load_checkpoint_file, strip_prefixes  # noqa: E402


class BackboneWithNeck(nn.Module):
    """``neck(backbone(x))``, so that one graph holds both."""

    def __init__(self, backbone: nn.Module, neck: nn.Module):
        super().__init__()
        self.backbone, self.neck = backbone, neck

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        return tuple(self.neck(self.backbone(x)))


def _kwargs(node) -> dict:
    return {k: v for k, v in dict(node).items() if k not in ('type', '_scope_')}


def build_model(source: str, with_neck: bool = False, checkpoint: str = None) -> nn.Module:
    """The backbone (and neck) of a config file or an arch name, in eval mode.

    Raises:
        ValueError: the config's backbone/neck are not LightViT/LightViTFPN,
            or ``--with-neck`` on a config without a neck.
        KeyError: ``--with-neck`` and the checkpoint has no ``neck.*`` weights.
    """
    if source.endswith('.py'):
        from mmengine.config import Config
        model_cfg = Config.fromfile(source).model
        if model_cfg.backbone.get('type') != 'LightViT':
            raise ValueError(f'{source}: model.backbone.type is '
                             f"{model_cfg.backbone.get('type')!r}, not 'LightViT'")
        backbone = LightViT(**dict(_kwargs(model_cfg.backbone), init_cfg=None))
        neck = None
        if with_neck:
            neck_cfg = model_cfg.get('neck')
            if not neck_cfg or neck_cfg.get('type') != 'LightViTFPN':
                raise ValueError(f"{source}: --with-neck needs model.neck.type 'LightViTFPN', "
                                 f"got {neck_cfg and neck_cfg.get('type')!r}")
            neck = LightViTFPN(**_kwargs(neck_cfg))
    else:
        backbone = LightViT(arch=source, init_cfg=None)
        neck = LightViTFPN(backbone.embed_dims, 256, num_outs=5,
                           num_extra_trans_convs=1) if with_neck else None
    backbone.init_weights()
    if neck is not None:
        neck.init_weights()
    if checkpoint:
        backbone.load_pretrained(checkpoint)
        if neck is not None:
            state, _ = extract_state_dict(load_checkpoint_file(checkpoint))
            neck_state = strip_prefixes(state, 'neck.')
            if not neck_state:
                raise KeyError(f'{checkpoint} has no neck.* weights for --with-neck')
            neck.load_state_dict(neck_state, strict=True)
    model = backbone if neck is None else BackboneWithNeck(backbone, neck)
    return model.eval()


def takes_every_branch(h: int, w: int, backbone: LightViT) -> bool:
    """Whether an h x w input makes every stage pad its token grid for the
    windows and every patch merging pad an odd grid."""
    window = backbone.stages[0][0].attn.window_size
    h, w = math.ceil(h / backbone.stem_stride), math.ceil(w / backbone.stem_stride)
    grids = []
    for _ in range(backbone.num_stages):
        grids.append((h, w))
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    pads = all(gh % window or gw % window for gh, gw in grids)
    odd = all(gh % 2 or gw % 2 for gh, gw in grids[:-1])
    return pads and odd


def trace_shape(shape: Sequence[int], backbone: LightViT) -> Tuple[int, int]:
    """``shape`` if it takes every padding branch, else the nearest shape with
    a larger width (or height) that does."""
    h, w = shape
    stride = backbone.stem_stride
    for step in range(0, 4096, stride):
        if takes_every_branch(h, w + step, backbone):
            return h, w + step
        if takes_every_branch(h + step, w, backbone):
            return h + step, w
    raise RuntimeError(f'no size near {shape} takes every padding branch')


def export(model: nn.Module, out: str, shape: Sequence[int], opset: int = 17) -> Tuple[int, int]:
    """Export to ``out`` with dynamic batch/height/width; returns the traced size."""
    backbone = model.backbone if isinstance(model, BackboneWithNeck) else model
    traced = trace_shape(shape, backbone)
    with torch.no_grad():
        outs = model(torch.zeros(1, 3, *traced))
    names = [f'out{i}' for i in range(len(outs))]
    axes = {'input': {0: 'batch', 2: 'height', 3: 'width'}}
    for name, output in zip(names, outs):  # maps (B, C, H, W), or tokens (B, N, C)
        axes[name] = ({0: 'batch', 2: f'{name}_height', 3: f'{name}_width'}
                      if output.dim() == 4 else {0: 'batch', 1: f'{name}_tokens'})
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    with warnings.catch_warnings():
        # TracerWarnings on the padding ifs (handled by the traced size) and
        # the legacy exporter's deprecation notice.
        warnings.filterwarnings('ignore', category=torch.jit.TracerWarning)
        warnings.filterwarnings('ignore', category=DeprecationWarning)
        torch.onnx.export(model, (torch.randn(2, 3, *traced), ), out, dynamo=False,
                          input_names=['input'], output_names=names, dynamic_axes=axes,
                          opset_version=opset, do_constant_folding=True)
    return traced


def verify(model: nn.Module, path: str, shapes: List[Tuple[int, int]]) -> List[float]:
    """Largest absolute difference between onnxruntime and eager outputs,
    per input size (batch 2, random images)."""
    import onnxruntime as ort
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    generator = torch.Generator().manual_seed(0)
    diffs = []
    for h, w in shapes:
        x = torch.randn(2, 3, h, w, generator=generator)
        with torch.no_grad():
            expected = model(x)
        got = session.run(None, {'input': x.numpy()})
        if [tuple(g.shape) for g in got] != [tuple(e.shape) for e in expected]:
            raise AssertionError(f'{h}x{w}: onnxruntime shapes {[g.shape for g in got]} '
                                 f'!= eager {[tuple(e.shape) for e in expected]}')
        diffs.append(max(float((torch.from_numpy(g) - e).abs().max())
                         for g, e in zip(got, expected)))
    return diffs


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('source', metavar='CONFIG_OR_ARCH',
                        help="a config file (.py) or an arch name ('t', 'tiny', 's', ...)")
    parser.add_argument('out', metavar='OUT.onnx')
    parser.add_argument('--with-neck', action='store_true', help='export backbone + LightViTFPN')
    parser.add_argument('--shape', nargs=2, type=int, default=[224, 224], metavar=('H', 'W'),
                        help='example input size (default 224 224); the model takes any size')
    parser.add_argument('--checkpoint', help='weights (default: random)')
    parser.add_argument('--opset', type=int, default=17)
    parser.add_argument('--atol', type=float, default=1e-4,
                        help='largest accepted |onnxruntime - eager| (default 1e-4)')
    parser.add_argument('--no-verify', action='store_true',
                        help='skip the onnxruntime check (done when onnxruntime is installed)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    MMLogger.get_current_instance().setLevel(logging.WARNING)  # init_weights' INFO lines
    model = build_model(args.source, args.with_neck, args.checkpoint)
    traced = export(model, args.out, args.shape, args.opset)
    note = '' if traced == tuple(args.shape) else (
        f' (traced at {traced[0]}x{traced[1]}: {args.shape[0]}x{args.shape[1]} does not take '
        'every padding branch)')
    print(f'wrote {args.out}{note}; inputs (batch, 3, height, width), any height/width >= 8')
    if args.no_verify:
        return
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        print('onnxruntime is not installed: not verified')
        return
    shapes = list(dict.fromkeys([tuple(args.shape), traced, (224, 224), (200, 264)]))
    diffs = verify(model, args.out, shapes)
    for (h, w), diff in zip(shapes, diffs):
        print(f'onnxruntime vs eager at {h}x{w}: max |diff| {diff:.2e}')
    if max(diffs) > args.atol:
        raise SystemExit(f'onnxruntime differs from eager by more than {args.atol}')


if __name__ == '__main__':
    main()

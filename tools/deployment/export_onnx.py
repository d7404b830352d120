# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""Export the LightViT backbone (optionally with its LightViTFPN neck) to ONNX
with dynamic batch, height and width, and check it in onnxruntime and OpenVINO.

The backbone comes from a config (``model.backbone`` / ``model.neck`` of an
mmdet, mmseg or mmpretrain config) or from an arch name ('t', 'tiny', 's',
...; the neck is then the paper's: 256 channels, 5 levels, one transposed-conv
level). Weights: ``--checkpoint`` (an official LightViT checkpoint, or an
OpenMMLab one with ``backbone.``/``neck.`` prefixes), else random.

How the sizes stay dynamic: torch's exporter (``torch.onnx.export(dynamo=True)``,
which needs ``onnxscript``) captures the model with ``torch.export`` with
symbolic batch, height and width. LightViT pads its token grids for the
windows and before patch merging without a Python ``if`` on the size (the
padding is 0 where none is needed), so one graph serves every size; the size
of the example input (``--shape``) does not matter.

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
import os
import os.path as osp
import warnings
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
from mmengine.logging import MMLogger

from lightvit_mm import LightViT, LightViTFPN
from lightvit_mm.checkpoint.io import extract_state_dict, load_checkpoint_file, strip_prefixes


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


def export(model: nn.Module, out: str, shape: Sequence[int], opset: int = 18) -> None:
    """Export to ``out`` (one file) with dynamic batch/height/width, from an
    example input of ``shape`` (H, W).

    Raises:
        ImportError: ``onnxscript`` (torch's ONNX exporter needs it) is missing.
    """
    import onnxscript  # noqa: F401  (a clear error before torch's exporter starts)
    from torch.export import Dim
    with torch.no_grad():
        outs = model(torch.zeros(1, 3, *shape))
    names = [f'out{i}' for i in range(len(outs))]
    min_size = (model.backbone if isinstance(model, BackboneWithNeck) else model).stem_stride
    sizes = {0: Dim('batch', min=1, max=1024), 2: Dim('height', min=min_size, max=16384),
             3: Dim('width', min=min_size, max=16384)}
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings('ignore', category=FutureWarning)
        program = torch.onnx.export(model, (torch.randn(2, 3, *shape), ), dynamo=True,
                                    input_names=['input'], output_names=names,
                                    dynamic_shapes=(sizes, ), opset_version=opset,
                                    external_data=False, verbose=False)
    program.save(out)


def _runtimes(path: str) -> Dict[str, Callable[[np.ndarray], List[np.ndarray]]]:
    """``{name: run(images) -> outputs}`` for onnxruntime and OpenVINO (CPU,
    fp32), each where installed."""
    runtimes = {}
    try:
        import onnxruntime as ort
    except ImportError:
        pass
    else:
        session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
        runtimes['onnxruntime'] = lambda x: session.run(None, {'input': x})
    try:
        import openvino as ov
    except ImportError:
        pass
    else:
        compiled = ov.Core().compile_model(path, 'CPU', {'INFERENCE_PRECISION_HINT': 'f32'})
        runtimes['openvino'] = lambda x: [compiled(x)[o] for o in compiled.outputs]
    return runtimes


def verify(model: nn.Module, path: str, shapes: List[Tuple[int, int]]) -> Dict[str, List[float]]:
    """Largest absolute difference between each installed runtime
    (onnxruntime, OpenVINO) and the eager outputs, per input size (batch 2,
    random images): ``{runtime: [diff per size]}``."""
    generator = torch.Generator().manual_seed(0)
    images = [torch.randn(2, 3, h, w, generator=generator) for h, w in shapes]
    with torch.no_grad():
        expected = [model(x) for x in images]
    diffs = {}
    for name, run in _runtimes(path).items():
        diffs[name] = []
        for (h, w), x, want in zip(shapes, images, expected):
            got = run(x.numpy())
            if [tuple(g.shape) for g in got] != [tuple(e.shape) for e in want]:
                raise AssertionError(f'{h}x{w}: {name} shapes {[g.shape for g in got]} '
                                     f'!= eager {[tuple(e.shape) for e in want]}')
            diffs[name].append(max(float((torch.from_numpy(g) - e).abs().max())
                                   for g, e in zip(got, want)))
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
    parser.add_argument('--opset', type=int, default=18,
                        help='ONNX opset (default 18, the oldest torch.onnx dynamo=True writes)')
    parser.add_argument('--atol', type=float, default=1e-4,
                        help='largest accepted |runtime - eager| (default 1e-4)')
    parser.add_argument('--no-verify', action='store_true',
                        help='skip the check in onnxruntime and OpenVINO (done where installed)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    MMLogger.get_current_instance().setLevel(logging.WARNING)  # init_weights' INFO lines
    model = build_model(args.source, args.with_neck, args.checkpoint)
    export(model, args.out, args.shape, args.opset)
    print(f'wrote {args.out}; inputs (batch, 3, height, width), any height/width >= 8')
    if args.no_verify:
        return
    # The example size, one without any padding, and odd ones that pad every grid.
    shapes = list(dict.fromkeys([tuple(args.shape), (224, 224), (200, 264), (97, 131)]))
    diffs = verify(model, args.out, shapes)
    if not diffs:
        print('neither onnxruntime nor openvino is installed: not verified')
    for name, per_size in diffs.items():
        for (h, w), diff in zip(shapes, per_size):
            print(f'{name} vs eager at {h}x{w}: max |diff| {diff:.2e}')
    worst = {name: max(per_size) for name, per_size in diffs.items()}
    over = [name for name, diff in worst.items() if diff > args.atol]
    if over:
        raise SystemExit(f'{", ".join(over)} differs from eager by more than {args.atol}')

if __name__ == '__main__':
    main()

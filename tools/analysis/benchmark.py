# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""Throughput and memory of LightViT and its peers, measured side by side.

Every model of a table is measured in the same process and the runs are
interleaved (round r times every model, in an order rotated by r, before
round r + 1 starts), after warm-up rounds, and each figure is the median over the
rounds, so a machine that slows down mid-run slows every model alike. Printed as Markdown tables:

1. Backbones at 224x224: inference and training-step (forward + backward)
   throughput in images/s, LightViT-T's speed-up over each model, parameters,
   activation memory kept for backward (MB), and on a GPU the peak memory.
   Peers come from the installed packages: PVTv2-B0/B1/B2 (mmdet),
   MobileViT-XS/S, EfficientFormer-L1, Swin-T, DeiT-S, ResNet-50 and
   RegNetX-800MF (mmpretrain). Also LightViT-T with ``with_cp=True``.
2. Dense prediction: the Mask R-CNN backbone + neck at 800x1333 and UPerNet
   (backbone + decode head) at 512x512, LightViT-T, inference on one image,
   training step on two (UPerNet's pooling module has BatchNorm).

Reference implementations of LightViT-T, built with the same weights (their
outputs are checked against ours before timing) and added to both tables:
``--official DIR`` (a clone of github.com/hunto/LightViT: its
``detection/lightvit.py``, imported with stand-ins for its timm / mmcv 1.x /
mmdet 2.x imports) and ``--ref GITREF`` (our backbone at another commit).
``--compile`` adds ``torch.compile`` of LightViT-T and prints what
``torch._dynamo.explain`` says about graph breaks.

Examples:
    python tools/analysis/benchmark.py --quick                 # CPU, < 10 min on 2 cores
    python tools/analysis/benchmark.py --official ../LightViT --ref HEAD~3
    python tools/analysis/benchmark.py --device cuda --amp bf16 --compile
"""
import argparse
import contextlib
import importlib
import importlib.util
import os
import os.path as osp
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import types
import warnings
from typing import Callable, Dict, List, Optional

import torch
import torch.nn as nn

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO not in sys.path:  # runnable as a plain script from any directory
    sys.path.insert(0, REPO)

import lightvit_mm  # noqa: E402,F401  (registers LightViT in every package)
from lightvit_mm.utils.complexity import build_from_config  # noqa: E402

BASE = 'LightViT-T'
DROP_PATH = 0.1  # LightViT's default stochastic depth, given to the official code too
LIGHTVIT_ARCHS = {'LightViT-T': 'tiny', 'LightViT-S': 'small', 'LightViT-B': 'base'}
PEERS = {  # name -> (package whose MODELS builds it, config); last stage out
    'PVTv2-B0': ('mmdet', dict(type='PyramidVisionTransformerV2', embed_dims=32,
                               num_layers=[2, 2, 2, 2], out_indices=(3, ))),
    'PVTv2-B1': ('mmdet', dict(type='PyramidVisionTransformerV2', embed_dims=64,
                               num_layers=[2, 2, 2, 2], out_indices=(3, ))),
    'PVTv2-B2': ('mmdet', dict(type='PyramidVisionTransformerV2', embed_dims=64,
                               num_layers=[3, 4, 6, 3], out_indices=(3, ))),
    'MobileViT-XS': ('mmpretrain', dict(type='MobileViT', arch='x_small')),
    'MobileViT-S': ('mmpretrain', dict(type='MobileViT', arch='small')),
    'EfficientFormer-L1': ('mmpretrain', dict(type='EfficientFormer', arch='l1')),
    'Swin-T': ('mmpretrain', dict(type='SwinTransformer', arch='tiny')),
    'DeiT-S': ('mmpretrain', dict(type='VisionTransformer', arch='deit-small')),
    'ResNet-50': ('mmpretrain', dict(type='ResNet', depth=50)),
    'RegNetX-800MF': ('mmpretrain', dict(type='RegNet', arch='regnetx_800mf')),
}
DENSE = {  # name -> (config, input (H, W), the parts after the backbone)
    'Mask R-CNN backbone+neck': ('configs/mmdet/mask-rcnn_lightvit-t_lightvit-fpn_1x_coco.py',
                                 (800, 1333), ('neck', )),
    'UPerNet backbone+head': ('configs/mmseg/lightvit-t-in1k-pre_upernet_8xb2-160k_ade20k-'
                              '512x512.py', (512, 512), ('decode_head', )),
}


def build_peer(name: str) -> nn.Module:
    """Build a backbone of :data:`PEERS` or :data:`LIGHTVIT_ARCHS`."""
    if name in LIGHTVIT_ARCHS:
        package, cfg = 'mmpretrain', dict(type='LightViT', arch=LIGHTVIT_ARCHS[name],
                                          out_indices=(2, ))
    else:
        package, cfg = PEERS[name]
    return importlib.import_module(f'{package}.registry').MODELS.build(cfg)


@contextlib.contextmanager
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
    stand_ins = {'timm': types.ModuleType('timm'), 'timm.models': types.ModuleType('timm.models'),
                 'timm.models.layers': layers, 'mmcv.runner': runner,
                 'mmdet.models.builder': builder}
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


def _import_file(path: str, name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reference_builders(official: Optional[str], refs: List[str]) -> Dict[str, Callable]:
    """name -> function(our LightViT-T) returning the reference backbone with
    the same weights and output stages.

    Raises:
        FileNotFoundError: ``official`` has no ``detection/lightvit.py``.
        RuntimeError: ``git show`` cannot read the backbone at a ref.
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
                drop_path_rate=DROP_PATH)
            model.load_state_dict(ours.state_dict())
            return model
        builders[f'{BASE} (official code)'] = build_official
    for ref in refs:
        source = subprocess.run(
            ['git', '-C', REPO, 'show', f'{ref}:lightvit_mm/models/backbones/lightvit.py'],
            capture_output=True, text=True)
        if source.returncode:
            raise RuntimeError(f'cannot read the backbone at --ref {ref!r}: {source.stderr}')
        with tempfile.NamedTemporaryFile('w', suffix='.py', delete=False) as f:
            f.write(source.stdout)
        module = _import_file(f.name, f'lightvit_at_{len(builders)}')
        os.unlink(f.name)

        def build_ref(ours, module=module):
            model = module.LightViT(arch=ours.arch_settings, out_indices=tuple(ours.out_indices))
            model.load_state_dict(ours.state_dict())
            return model
        builders[f'{BASE} @ {ref}'] = build_ref
    return builders


def flat_outputs(out) -> List[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for item in out for t in flat_outputs(item)]


class Bench:
    """One model's inference and training-step functions on one input."""

    def __init__(self, name: str, model: nn.Module, inputs: torch.Tensor, args,
                 infer: bool = True, train: bool = True, base: Optional['Bench'] = None,
                 train_inputs: Optional[torch.Tensor] = None):
        self.name, self.model, self.inputs = name, model.to(args.device), inputs
        self.train_inputs = inputs if train_inputs is None else train_inputs
        self.base = base or self  # the row the speed-up column compares with
        self.device, self.amp = args.device, args.amp
        self.infer, self.train = infer, train
        self.params = sum(p.numel() for p in model.parameters())
        self.times: Dict[str, List[float]] = {'infer': [], 'train': []}

    def autocast(self):
        if self.amp == 'fp32':
            return contextlib.nullcontext()
        dtype = {'fp16': torch.float16, 'bf16': torch.bfloat16}[self.amp]
        return torch.autocast(self.device.type, dtype=dtype)

    def run(self, mode: str):
        if mode == 'infer':
            self.model.eval()
            with torch.inference_mode(), self.autocast():
                self.model(self.inputs)
            return
        self.model.train()
        with self.autocast():
            loss = sum(t.float().mean() for t in flat_outputs(self.model(self.train_inputs)))
        loss.backward()
        for p in self.model.parameters():
            p.grad = None

    def time(self, mode: str, iters: int):
        sync = torch.cuda.synchronize if self.device.type == 'cuda' else (lambda: None)
        sync()
        start = time.perf_counter()
        for _ in range(iters):
            self.run(mode)
        sync()
        self.times[mode].append((time.perf_counter() - start) / iters)

    def throughput(self, mode: str) -> float:
        inputs = self.inputs if mode == 'infer' else self.train_inputs
        return inputs.shape[0] / statistics.median(self.times[mode])

    def activation_mb(self) -> float:
        """MB of tensors autograd keeps for backward in one training forward
        (parameters excluded; each storage counted once)."""
        params = {p.untyped_storage().data_ptr() for p in self.model.parameters()}
        kept = {}

        def pack(t):
            storage = t.untyped_storage()
            if storage.data_ptr() not in params:
                kept[storage.data_ptr()] = storage.nbytes()
            return t
        self.model.train()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), self.autocast():
            out = self.model(self.train_inputs)
        del out
        return sum(kept.values()) / 2**20

    def peak_mb(self, mode: str) -> float:
        """Peak GPU memory (MB) of one run above what was allocated before."""
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        self.run(mode)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20


def measure(benches: List[Bench], args):
    """Interleaved rounds, inference first, then training steps (as a model is
    used: training allocations do not disturb the inference runs): warm-up
    rounds, then ``args.repeats`` timed. Each round starts one model later
    (round r runs ``benches[r:] + benches[:r]``), so no model always runs
    right after the same other one."""
    rounds = args.warmup + args.repeats
    for mode in ('infer', 'train'):
        for round_index in range(rounds):
            shift = round_index % len(benches)
            for bench in benches[shift:] + benches[:shift]:
                if getattr(bench, mode):
                    bench.time(mode, args.iters)
                    if round_index < args.warmup:
                        bench.times[mode].clear()
            print(f'  {mode} round {round_index + 1}/{rounds} done', file=sys.stderr)


def check_same_outputs(reference: nn.Module, ours: nn.Module, inputs: torch.Tensor, name: str):
    """Raise if a reference implementation disagrees with ours (fp32, eval)."""
    with torch.inference_mode():
        ref_out = flat_outputs(reference.eval()(inputs))
        our_out = flat_outputs(ours.eval()(inputs))
    diff = max((a - b).abs().max().item() for a, b in zip(ref_out, our_out))
    if len(ref_out) != len(our_out) or diff > 1e-4:
        raise RuntimeError(f'{name} disagrees with lightvit_mm: max abs difference {diff:.2e}')
    print(f'  {name}: outputs equal ours within {diff:.1e}', file=sys.stderr)


def table(benches: List[Bench], args) -> str:
    cols = ['model', 'params (M)', 'infer (img/s)', 'train (img/s)',
            f'{BASE} speed-up infer / train', 'activations (MB)']
    if args.device.type == 'cuda':
        cols += ['peak infer / train (MB)']
    lines = ['| ' + ' | '.join(cols) + ' |', '|' + ' --- |' * len(cols)]
    for b in benches:
        infer = b.throughput('infer') if b.infer else None
        train = b.throughput('train') if b.train else None
        ratios = []
        for mode, value in (('infer', infer), ('train', train)):
            ratios.append(f'{b.base.throughput(mode) / value:.2f}x' if value else '-')
        row = [b.name, f'{b.params / 1e6:.2f}', f'{infer:.3g}' if infer else '-',
               f'{train:.3g}' if train else '-', ' / '.join(ratios),
               f'{b.activation_mb():.0f}' if b.train else '-']
        if args.device.type == 'cuda':
            row.append(' / '.join(f'{b.peak_mb(m):.0f}' if getattr(b, m) else '-'
                                  for m in ('infer', 'train')))
        lines.append('| ' + ' | '.join(row) + ' |')
    return '\n'.join(lines)


def explain_compile(model: nn.Module, inputs: torch.Tensor) -> str:
    """What ``torch._dynamo.explain`` says about compiling ``model``."""
    import torch._dynamo
    torch._dynamo.reset()
    with torch.inference_mode():
        report = torch._dynamo.explain(model.eval())(inputs)
    reasons = sorted({str(b.reason).splitlines()[0] for b in report.break_reasons})
    return (f'torch.compile({BASE}): {report.graph_count} graph(s), '
            f'{report.graph_break_count} graph break(s)'
            + ''.join(f'\n  - {r}' for r in reasons))


def backbone_benches(args, references) -> List[Bench]:
    torch.manual_seed(0)
    x = torch.randn(args.batch_size, 3, 224, 224, device=args.device)
    ours = build_peer(BASE).to(args.device)
    base = Bench(BASE, ours, x, args)
    benches = [base]
    for name, build in references.items():
        model = build(ours).to(args.device)
        check_same_outputs(model, ours, x, name)
        benches.append(Bench(name, model, x, args, base=base))
    if args.compile:
        compiled = build_peer(BASE)
        compiled.load_state_dict(ours.state_dict())
        benches.append(Bench(f'{BASE} (torch.compile)', torch.compile(compiled), x, args,
                             base=base))
    cp_model = build_peer(BASE)
    cp_model.load_state_dict(ours.state_dict())
    for module in cp_model.modules():
        if hasattr(module, 'with_cp'):
            module.with_cp = True
    benches.append(Bench(f'{BASE} (with_cp)', cp_model, x, args, infer=False, base=base))
    names = [n for n in LIGHTVIT_ARCHS if n != BASE] + list(PEERS)
    benches += [Bench(n, build_peer(n), x, args, base=base) for n in names if n in args.models]
    return benches


def dense_benches(args, references) -> List[Bench]:
    benches = []
    for name, (config, size, parts) in DENSE.items():
        model, _ = build_from_config(osp.join(REPO, config))
        torch.manual_seed(0)
        x = torch.randn(2, 3, *size, device=args.device)  # train on 2: UPerNet's PPM has BN
        heads = [getattr(model, p) for p in parts]
        base = Bench(f'{name}, {BASE}, {size[0]}x{size[1]}',
                     nn.Sequential(model.backbone, *heads), x[:1], args, train_inputs=x)
        benches.append(base)
        for ref_name, build in references.items():
            backbone = build(model.backbone).to(args.device)
            check_same_outputs(backbone, model.backbone, x[:1], ref_name)
            benches.append(Bench(f'{name}, {ref_name}, {size[0]}x{size[1]}',
                                 nn.Sequential(backbone, *heads), x[:1], args, base=base,
                                 train_inputs=x))
    return benches


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true',
                        help='batch 4 (CPU), 1 warm-up round, 5 timed rounds of 1 iteration')
    parser.add_argument('--device', default='auto', help="'cpu', 'cuda' or 'auto' (default)")
    parser.add_argument('--amp', choices=('fp32', 'fp16', 'bf16'), default='fp32',
                        help='autocast dtype (default fp32: no autocast)')
    parser.add_argument('--batch-size', type=int, help='backbone batch (default: 4 quick, '
                        '16 on CPU, 64 on GPU); dense models run single images')
    parser.add_argument('--repeats', type=int, default=5, help='timed rounds (median taken)')
    parser.add_argument('--warmup', type=int, help='untimed rounds first (default 1 quick, 2)')
    parser.add_argument('--iters', type=int, help='iterations per timing (default 1 quick, 3)')
    parser.add_argument('--threads', type=int, help='torch CPU threads (default: torch\'s)')
    parser.add_argument('--models', nargs='*', default=[n for n in LIGHTVIT_ARCHS if n != BASE]
                        + list(PEERS), help='backbones besides LightViT-T (default: all)')
    parser.add_argument('--tables', nargs='+', choices=('backbones', 'dense'),
                        default=['backbones', 'dense'])
    parser.add_argument('--official', metavar='DIR',
                        help='clone of github.com/hunto/LightViT to time its code too')
    parser.add_argument('--ref', action='append', default=[], metavar='GITREF',
                        help='also time lightvit_mm\'s backbone as of this commit (repeatable)')
    parser.add_argument('--compile', action='store_true',
                        help='add torch.compile(LightViT-T) and explain its graph breaks')
    args = parser.parse_args(argv)
    unknown = sorted(set(args.models) - set(PEERS) - set(LIGHTVIT_ARCHS))
    if unknown:
        parser.error(f'unknown --models {unknown}; accepted: '
                     f'{[n for n in LIGHTVIT_ARCHS if n != BASE] + list(PEERS)}')
    if args.device == 'auto':
        args.device = 'cuda' if torch.cuda.is_available() else 'cpu'
    args.device = torch.device(args.device)
    if args.device.type == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda given but torch sees no GPU')
    if args.amp == 'fp16' and args.device.type == 'cpu':
        parser.error('--amp fp16 needs a GPU; on CPU use --amp bf16')
    gpu = args.device.type == 'cuda'
    args.batch_size = args.batch_size or (4 if args.quick and not gpu else 64 if gpu else 16)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    args.iters = args.iters or (1 if args.quick and not gpu else 3 if not gpu else 20)
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings('ignore')
    from mmengine.logging import MMLogger
    MMLogger.get_current_instance().setLevel('ERROR')
    device = (torch.cuda.get_device_name(args.device) if args.device.type == 'cuda'
              else platform.processor() or platform.machine())
    print(f'device: {args.device} ({device}); torch {torch.__version__}; '
          f'{torch.get_num_threads()} CPU threads; precision {args.amp}; '
          f'median of {args.repeats} interleaved rounds after {args.warmup} warm-up, '
          f'{args.iters} iteration(s) per timing')
    references = reference_builders(args.official, args.ref)
    if 'backbones' in args.tables:
        benches = backbone_benches(args, references)
        measure(benches, args)
        print(f'\nBackbones, 224x224, batch {args.batch_size} (last stage out):\n')
        print(table(benches, args))
        if args.compile:
            print('\n' + explain_compile(build_peer(BASE).to(args.device),
                                         benches[0].inputs))
    if 'dense' in args.tables:
        benches = dense_benches(args, references)
        measure(benches, args)
        print(f'\nDense prediction, inference on 1 image, training step on 2 (speed-up: '
              f'{BASE} of lightvit_mm over each row):\n')
        print(table(benches, args))
    print('\nactivations: tensors autograd keeps for backward in one training forward '
          '(parameters excluded). train: forward + backward, no optimizer step.')


if __name__ == '__main__':
    main()

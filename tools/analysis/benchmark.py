# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""Throughput and memory of LightViT and its peers, measured side by side.

Every model of a table is measured in the same process and the runs are
interleaved (round r times every model, in an order rotated by r, before
round r + 1 starts), after warm-up rounds, and each figure is the median over
the rounds, so a machine that slows down mid-run slows every model alike. The
machine's fp32 matrix-product rate (:class:`GemmPeak`) is timed in the same
rounds, and every LightViT row gets its achieved GFLOP/s and their percentage
of that peak (its forward FLOP, 2 x multiply-adds with the attention
products, x images/s; x3 for a training step). Printed as Markdown tables:

1. LightViT-T's paths at 224x224 (``--size``; inference and training step) and at
   512x512, batch 1 (inference; ``--single-image 0`` leaves it out): eager,
   ``switch_to_deploy()``, with ``--compile [MODE ...]`` ``torch.compile``
   in each inductor mode given (``default``, ``max-autotune-no-cudagraphs``,
   ``reduce-overhead``: CUDA graphs) and, for ``default``, deploy mode
   compiled with inductor's freezing (inference only), and with
   ``--cuda-graph`` the eager model replayed as CUDA graphs (no compiler);
   the first call's time (compilation or graph capture included) is printed
   under the table.
2. Backbones at 224x224 (``--size``): inference and training-step (forward +
   backward) throughput in images/s, LightViT-T's speed-up over each model, parameters,
   activation memory kept for backward (MB), and on a GPU the peak memory.
   Peers come from the installed packages: PVTv2-B0/B1/B2 (mmdet),
   MobileViT-XS/S, EfficientFormer-L1, Swin-T, DeiT-S, ResNet-50 and
   RegNetX-800MF (mmpretrain), or from timm (``PVTv2-B0 (timm)``,
   ``MobileViT-XS (timm)``, ``Swin-T (timm)``: ``forward_features``, no
   OpenMMLab package needed). Also LightViT-T with ``with_cp=True``, with
   ``--official`` the official code's LightViT-T/S/B beside ours, and under
   the table the paper's V100 inference ratios (LightViT-T over PVTv2-B0 and
   MobileViT-XS, LightViT-B over Swin-T) beside the same ratios measured here.
3. Dense prediction: the Mask R-CNN backbone + neck at 800x1333 and UPerNet
   (backbone + decode head) at 512x512, LightViT-T, inference on one image,
   training step on two (UPerNet's pooling module has BatchNorm).
4. ``--tables deploy`` (CPU; not in the default set): the same weights as
   PyTorch eager fp32, compiled (deploy mode, inductor freezing), bf16
   autocast eager and compiled, and exported to ONNX (static shape) in ONNX
   Runtime fp32 / int8 and OpenVINO fp32 / bf16 / int8
   (:mod:`lightvit_mm.deploy.speed_rows`), for LightViT-T's backbone at
   224x224 batch 8 and 512x512 batch 1 (with ``--official`` the official
   code's row) and the whole classifier at 224x224 batch 8 (with
   ``--official-classification`` the official classifier's row), each row's
   agreement with eager fp32 printed under its table; then the whole
   Mask R-CNN (one 800x1333 image) and UPerNet (512x2048, whole) of the paper
   configs, random weights (Mask R-CNN keeps every box: score threshold 0),
   as PyTorch eager and deployed folders, with where each one's time goes.
   int8 rows are calibrated on the timed input itself (speed only; accuracy:
   ``tools/deployment/export.py --precision int8``). The GEMM peaks of fp32,
   bf16 and int8 are timed in the same rounds, and each row's share is of
   its own precision's peak.

Reference implementations of LightViT-T, built with the same weights (their
outputs, and in training tables one step's gradients within 1e-4 relative,
are checked against ours before timing) and added to tables 1 and 3:
``--official DIR`` (a clone of github.com/hunto/LightViT: its
``detection/lightvit.py``, imported with stand-ins for its timm / mmcv 1.x /
mmdet 2.x imports) and ``--ref GITREF`` (our backbone at another commit);
they and the checks live in :mod:`lightvit_mm.analysis.official_reference`.
Each table is a function of :data:`TABLES` (``--tables`` picks them by name).
With ``--official`` every table also gets each row's speed-up over the
official code. ``--compile`` also prints what ``torch._dynamo.explain`` says
about graph breaks.

Examples:
    python tools/analysis/benchmark.py --quick                 # CPU, < 10 min on 2 cores
    python tools/analysis/benchmark.py --official ../LightViT --ref HEAD~3
    python tools/analysis/benchmark.py --device cuda --amp bf16 --compile
    python tools/analysis/benchmark.py --tables deploy --official ../LightViT \
        --official-classification ../image_classification_sota
    python tools/analysis/benchmark.py --device cuda --amp fp16 --tables lightvit \
        --single-image 0 --compile default reduce-overhead --compile-train --cuda-graph
"""
import argparse
import contextlib
import copy
import importlib
import os.path as osp
import platform
import statistics
import sys
import time
import warnings
from typing import Callable, Dict, List, Optional

import torch
import torch.nn as nn

import lightvit_mm  # registers LightViT in every package
from lightvit_mm.analysis.complexity import build_from_config, count_complexity
from lightvit_mm.analysis.official_reference import (
    BASE,
    OFFICIAL,
    check_same_gradients,
    check_same_outputs,
    flat_outputs,
    official_classifier_builder,
    reference_builders,
)

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))  # the configs' checkout
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
TIMM_PEERS = {  # name -> (timm model, its input-size argument if it has one); timm's
    'PVTv2-B0 (timm)': ('pvt_v2_b0', None),  # forward_features: last stage after its norm
    'MobileViT-XS (timm)': ('mobilevit_xs', None),
    'Swin-T (timm)': ('swin_tiny_patch4_window7_224', 'img_size'),
}
PAPER_V100 = {  # (faster, slower): their img/s in the paper's table (V100, inference)
    ('LightViT-T', 'PVTv2-B0'): (2578, 2324),
    ('LightViT-T', 'MobileViT-XS'): (2578, 1581),
    ('LightViT-B', 'Swin-T'): (827, 765),
}
ALL_MODELS = [n for n in LIGHTVIT_ARCHS if n != BASE] + list(PEERS) + list(TIMM_PEERS)
DENSE = {  # name -> (config, input (H, W), the parts after the backbone)
    'Mask R-CNN backbone+neck': ('configs/mmdet/mask-rcnn_lightvit-t_lightvit-fpn_1x_coco.py',
                                 (800, 1333), ('neck', )),
    'UPerNet backbone+head': ('configs/mmseg/lightvit-t-in1k-pre_upernet_8xb2-160k_ade20k-'
                              '512x512.py', (512, 512), ('decode_head', )),
}


class TimmFeatures(nn.Module):
    """A timm classifier as a backbone: its ``forward_features``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)


def build_peer(name: str, size: int = 224) -> nn.Module:
    """Build a backbone of :data:`PEERS`, :data:`TIMM_PEERS` or
    :data:`LIGHTVIT_ARCHS` (ours needs no OpenMMLab package but mmengine and
    mmcv; the peers need theirs), for ``size`` x ``size`` inputs where the
    model is built for one size (timm's Swin)."""
    if name in LIGHTVIT_ARCHS:
        return lightvit_mm.LightViT(arch=LIGHTVIT_ARCHS[name], out_indices=(2, ))
    if name in TIMM_PEERS:
        import timm
        model, size_argument = TIMM_PEERS[name]
        options = {size_argument: size} if size_argument else {}
        return TimmFeatures(timm.create_model(model, **options))
    package, cfg = PEERS[name]
    return importlib.import_module(f'{package}.registry').MODELS.build(cfg)


class Bench:
    """One model's inference and training-step functions on one input."""

    def __init__(self, name: str, model: nn.Module, inputs: torch.Tensor, args,
                 infer: bool = True, train: bool = True, base: Optional['Bench'] = None,
                 train_inputs: Optional[torch.Tensor] = None, flop: Optional[float] = None,
                 group=None):
        self.name, self.model, self.inputs = name, model.to(args.device), inputs
        self.flop = flop  # forward FLOP per image (2 x multiply-adds), None: not counted
        self.first: Dict[str, float] = {}  # seconds of the first timing (compilation)
        self.train_inputs = inputs if train_inputs is None else train_inputs
        self.base = base or self  # the row the speed-up column compares with
        # rows of one group are divided by the group's official-code row, if any
        self.group = id(self.base) if group is None else group
        self.device, self.amp = args.device, args.amp
        self.precision = args.amp  # the GEMM peak its share is given against
        self.infer, self.train = infer, train
        self.params = sum(p.numel() for p in model.parameters())
        self.times: Dict[str, List[float]] = {'infer': [], 'train': []}
        self.errors: Dict[str, str] = {}  # mode -> why its run failed (see measure)

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
        seconds = time.perf_counter() - start
        self.first.setdefault(mode, seconds)
        self.times[mode].append(seconds / iters)

    def throughput(self, mode: str) -> float:
        inputs = self.inputs if mode == 'infer' else self.train_inputs
        return inputs.shape[0] / statistics.median(self.times[mode])

    def spread(self, mode: str) -> float:
        """(slowest - fastest) / median of the timed rounds, in percent."""
        times = self.times[mode]
        return 100 * (max(times) - min(times)) / statistics.median(times)

    def gflops(self, mode: str) -> Optional[float]:
        """Achieved GFLOP/s: forward FLOP per image x images/s, x3 for a
        training step (backward counted as twice the forward)."""
        if self.flop is None:
            return None
        return self.flop * (1 if mode == 'infer' else 3) * self.throughput(mode) / 1e9


    def activation_mb(self) -> float:
        """MB of tensors autograd keeps for backward in one training forward
        (parameters excluded; each storage counted once)."""
        params = {p.untyped_storage().data_ptr() for p in self.model.parameters()}
        kept = {}

        def pack(t):
            storage = t.untyped_storage()
            if storage.data_ptr() not in params:
                kept[storage.data_ptr()] = storage.nbytes()
            # Not ``t`` itself: an output saved by its own grad_fn would then
            # hold itself in a cycle the garbage collector cannot see, and
            # every call would leak the activations (77 GiB on a GPU at batch 256).
            return t.detach()
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


class CudaGraphed(nn.Module):
    """``model`` replayed as CUDA graphs, no compiler: the inference forward
    (``torch.cuda.CUDAGraph``) and the training forward + backward
    (``torch.cuda.make_graphed_callables``) are each captured at the first
    call in that mode, for that call's input shape, dtype and autocast, and
    replayed after (the input is copied into the captured one). What the
    graphs cure is the host's time launching many small kernels.

    Raises:
        ValueError: a later call with another input shape than the captured one.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self._graphs = {}  # training mode -> (input, callable returning the outputs)

    def _capture(self, x: torch.Tensor):
        autocast = torch.get_autocast_dtype('cuda') if torch.is_autocast_enabled('cuda') \
            else None
        static_x = x.clone()
        # autocast's weight cache cannot outlive a capture: cache_enabled=False
        cast = torch.autocast('cuda', dtype=autocast or torch.float32,
                              enabled=autocast is not None, cache_enabled=False)
        if self.training:
            with cast:
                graphed = torch.cuda.make_graphed_callables(self.model, (static_x, ),
                                                            allow_unused_input=True)
            return static_x, lambda: graphed(static_x)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), cast:  # warm-up off the capture stream
            for _ in range(3):
                self.model(static_x)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), cast:
            static_out = self.model(static_x)

        def replay():
            graph.replay()
            return static_out
        return static_x, replay

    def forward(self, x: torch.Tensor):
        if self.training not in self._graphs:
            self._graphs[self.training] = self._capture(x)
        static_x, run = self._graphs[self.training]
        if static_x.shape != x.shape:
            raise ValueError(f'CudaGraphed: captured for input {tuple(static_x.shape)}, got '
                             f'{tuple(x.shape)}; capture another one for that shape')
        static_x.copy_(x)
        return run()


class GemmPeak(Bench):
    """The machine's fp32 matrix-product rate, timed as one more row of the
    interleaved rounds (so it sees the same load as the models): ``iters``
    products of two ``size`` x ``size`` matrices into a preallocated output."""

    def __init__(self, args, size: int = 2048):
        self.name, self.size, self.device = f'fp32 GEMM {size}x{size}', size, args.device
        self.infer = self.train = True
        self.precision = 'fp32'
        self.a, self.b, self.c = (torch.randn(size, size, device=args.device) for _ in range(3))
        self.times = {'infer': [], 'train': []}
        self.first, self.errors = {}, {}

    def run(self, mode: str):
        torch.mm(self.a, self.b, out=self.c)

    def gflops(self, mode: str) -> float:
        return 2 * self.size**3 / statistics.median(self.times[mode]) / 1e9


class CallBench(Bench):
    """A row that times a :class:`~lightvit_mm.deploy.speed_rows.Row`'s call
    (a runtime graph, a deployed model, a compiled function, a GEMM):
    inference only, ``images`` per call. A row with ``row.flop`` is a peak:
    its GFLOP/s are ``row.flop`` per call; the others are given ``flop`` per
    image like the model rows."""

    def __init__(self, name: str, row, images: int, args, base: Optional[Bench] = None,
                 flop: Optional[float] = None, group=None):
        self.name, self.call, self.images = name, row.call, images
        self.precision, self.peak_flop = row.precision, row.flop
        self.flop = flop
        self.base = base or self
        self.group = id(self.base) if group is None else group
        self.device, self.amp = torch.device('cpu'), args.amp
        self.infer, self.train, self.params = True, False, None
        self.times = {'infer': [], 'train': []}
        self.first, self.errors = {}, {}

    def run(self, mode: str):
        self.call()

    def throughput(self, mode: str) -> float:
        return self.images / statistics.median(self.times[mode])

    def gflops(self, mode: str) -> Optional[float]:
        if self.peak_flop is not None:
            return self.peak_flop / statistics.median(self.times[mode]) / 1e9
        return super().gflops(mode)


def measure(benches: List[Bench], args):
    """Interleaved rounds, inference first, then training steps (as a model is
    used: training allocations do not disturb the inference runs): warm-up
    rounds, then ``args.repeats`` timed. Each round starts one model later
    (round r runs ``benches[r:] + benches[:r]``), so no model always runs
    right after the same other one. A row whose run raises loses that mode
    (its error is kept in ``errors`` and printed under the table); the other
    rows are timed on."""
    rounds = args.warmup + args.repeats
    for mode in ('infer', 'train'):
        for round_index in range(rounds):
            shift = round_index % len(benches)
            for bench in benches[shift:] + benches[:shift]:
                if getattr(bench, mode):
                    try:
                        bench.time(mode, args.iters)
                    except Exception as error:  # the row loses this mode, the others go on
                        bench.errors[mode] = f'{type(error).__name__}: {error}'.splitlines()[0]
                        setattr(bench, mode, False)
                        print(f'  {bench.name}, {mode}: {bench.errors[mode]}', file=sys.stderr)
                        continue
                    if round_index < args.warmup:
                        bench.times[mode].clear()
            print(f'  {mode} round {round_index + 1}/{rounds} done', file=sys.stderr)


def _measured(cell: Callable[[], str]) -> str:
    """``cell()``, or 'failed (error)' where that measurement raises."""
    try:
        return cell()
    except Exception as error:
        return f'failed ({type(error).__name__})'


def table(benches: List[Bench], args, peaks: Dict[str, Bench]) -> str:
    """Markdown table of the timed rows. Where a group of rows (those sharing
    a ``base`` row) has an official-code row, every row of the group also gets
    its speed divided by that row's. ``peaks``: precision -> its GEMM row;
    each row's share is of the peak of its ``precision`` (fp32's where that
    precision has none)."""
    officials = {b.group: b for b in benches if OFFICIAL in b.name}
    modes = [m for m in ('infer', 'train') if any(getattr(b, m) for b in benches)]
    cols = ['model', 'params (M)'] + [f'{m} (img/s)' for m in modes]
    cols += [f'{BASE} speed-up ' + ' / '.join(modes)]
    if officials:
        cols += ['speed-up over official ' + ' / '.join(modes)]
    cols += ['GFLOP/s ' + ' / '.join(modes), '% of GEMM peak ' + ' / '.join(modes),
             'spread (%) ' + ' / '.join(modes)]
    if 'train' in modes:
        cols += ['activations (MB)']
    if args.device.type == 'cuda':
        cols += ['peak ' + ' / '.join(modes) + ' (MB)']
    lines = ['| ' + ' | '.join(cols) + ' |', '|' + ' --- |' * len(cols)]

    def per_mode(b, fn):
        return ' / '.join(fn(b, m) if getattr(b, m) else '-' for m in modes)
    for b in benches:
        peak = peaks.get(b.precision, peaks['fp32'])
        row = [b.name, f'{b.params / 1e6:.2f}' if b.params is not None else '-']
        row += [f'{b.throughput(m):.3g}' if getattr(b, m) else '-' for m in modes]
        row.append(per_mode(b, lambda b, m: f'{b.base.throughput(m) / b.throughput(m):.2f}x'
                            if getattr(b.base, m) else '-'))
        versus = officials.get(b.group)
        if officials:
            row.append(per_mode(b, lambda b, m: f'{b.throughput(m) / versus.throughput(m):.2f}x'
                                if versus is not None and getattr(versus, m) else '-'))
        row.append(per_mode(b, lambda b, m: f'{b.gflops(m):.0f}' if b.flop else '-'))
        row.append(per_mode(b, lambda b, m: f'{100 * b.gflops(m) / peak.gflops(m):.0f}%'
                            if b.flop else '-'))
        row.append(per_mode(b, lambda b, m: f'{b.spread(m):.0f}'))
        if 'train' in modes:
            row.append(_measured(lambda: f'{b.activation_mb():.0f}') if b.train else '-')
        if args.device.type == 'cuda':
            row.append(per_mode(b, lambda b, m: _measured(lambda: f'{b.peak_mb(m):.0f}')))
        lines.append('| ' + ' | '.join(row) + ' |')
    for peak in peaks.values():
        lines.append(('\n' if peak is next(iter(peaks.values())) else '') + ', '.join(
            f'{m}: {peak.gflops(m):.0f} G(FL)OP/s (spread {peak.spread(m):.0f}%)'
            for m in modes if getattr(peak, m))
            + f' = {peak.name} peak ({peak.precision}) measured in the same rounds')
    for b in benches:
        for mode, error in b.errors.items():
            lines.append(f'{b.name}: {mode} FAILED ({error})')
        if b.first and ('compile' in b.name or 'CUDA graph' in b.name):
            lines.append(f'{b.name}: first timing ({args.iters} iteration(s)) '
                         + ', '.join(f'{b.first[m]:.1f} s ({m})' for m in modes if m in b.first)
                         + ', compilation or graph capture included')
    return '\n'.join(lines)


def forward_flop(model: nn.Module, shape) -> float:
    """FLOP (2 x multiply-adds, attention products included) of one forward
    pass of ``model`` on one image of ``shape`` (C, H, W)."""
    device = next(model.parameters()).device
    with torch.no_grad():
        stats = count_complexity(model.eval(), torch.zeros(1, *shape, device=device))
    return 2.0 * stats['flops']


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


def lightvit_benches(args, references, size: int, batch: int, train: bool) -> List[Bench]:
    """LightViT-T's inference paths (eager, deploy, torch.compile) and the
    references, on ``batch`` images of ``size`` x ``size``."""
    torch.manual_seed(0)
    x = torch.randn(batch, 3, size, size, device=args.device)
    ours = build_peer(BASE).to(args.device)
    flop = forward_flop(ours, (3, size, size))
    base = Bench(BASE, ours, x, args, train=train, flop=flop)
    benches = [base]
    deployed = copy.deepcopy(ours)
    deployed.switch_to_deploy()
    check_same_outputs(deployed, ours, x, f'{BASE} (deploy)')
    benches.append(Bench(f'{BASE} (deploy)', deployed, x, args, train=False, base=base,
                         flop=flop))
    for mode in args.compile or []:
        if args.compile_backend == 'inductor':
            name = f'{BASE} (torch.compile' + ('' if mode == 'default' else f' {mode}') + ')'
            options = dict(mode=mode)
        else:  # modes are inductor's: other backends get one row
            name, options = f'{BASE} (torch.compile, {args.compile_backend})', {}
            if mode != args.compile[0]:
                continue
        benches.append(Bench(name, torch.compile(copy.deepcopy(ours), backend=args.compile_backend,
                                                 **options), x, args,
                             train=train and args.compile_train, base=base, flop=flop))
        if mode == 'default' and args.compile_backend == 'inductor':
            deployed = copy.deepcopy(ours)
            deployed.switch_to_deploy()
            benches.append(Bench(f'{BASE} (deploy, torch.compile freezing)',
                                 torch.compile(deployed, options={'freezing': True}), x, args,
                                 train=False, base=base, flop=flop))
    if args.cuda_graph:
        benches.append(Bench(f'{BASE} (CUDA graphs)', CudaGraphed(copy.deepcopy(ours)), x, args,
                             train=train, base=base, flop=flop))
    for name, build in references.items():
        model = build(ours).to(args.device)
        check_same_outputs(model, ours, x, name)
        if train:
            check_same_gradients(model, ours, x, name)
        benches.append(Bench(name, model, x, args, train=train, base=base, flop=flop))
    return benches


def backbone_benches(args, references) -> List[Bench]:
    """LightViT-T (also with ``with_cp``), the other LightViT sizes and the
    peers of ``args.models``; with ``--official`` each LightViT size also
    built from the official code (same weights, outputs checked)."""
    torch.manual_seed(0)
    size = args.size
    x = torch.randn(args.batch_size, 3, size, size, device=args.device)
    build_official = references.get(f'{BASE} {OFFICIAL}')
    benches = []
    for name in [BASE] + [n for n in ALL_MODELS if n in args.models]:
        model = build_peer(name, size).to(args.device)
        flop = forward_flop(model, (3, size, size)) if name in LIGHTVIT_ARCHS else None
        # each size divided by its own official row; the peers by none
        group = None if name == BASE else name
        bench = Bench(name, model, x, args, base=benches[0] if benches else None, flop=flop,
                      group=group)
        benches.append(bench)
        if name == BASE:
            cp_model = copy.deepcopy(model)
            for module in cp_model.modules():
                if hasattr(module, 'with_cp'):
                    module.with_cp = True
            benches.append(Bench(f'{BASE} (with_cp)', cp_model, x, args, infer=False,
                                 base=bench, flop=flop))
        if name in LIGHTVIT_ARCHS and build_official:
            official = build_official(model).to(args.device)
            check_same_outputs(official, model, x, f'{name} {OFFICIAL}')
            benches.append(Bench(f'{name} {OFFICIAL}', official, x, args, base=benches[0],
                                 flop=flop, group=bench.group))
    return benches


def paper_table(benches: List[Bench]) -> str:
    """The paper's V100 inference ratios (:data:`PAPER_V100`) beside the same
    ratios of the rows measured here (a peer's row matches with or without a
    source suffix such as `` (timm)``); '' when no pair was measured."""
    rows = {}
    for b in benches:  # the first row of each model: LightViT-T, not LightViT-T (with_cp)
        if OFFICIAL not in b.name:
            rows.setdefault(b.name.split(' (')[0], b)
    lines = []
    for (fast, slow), (fast_paper, slow_paper) in PAPER_V100.items():
        if fast in rows and slow in rows:
            ours, peer = rows[fast], rows[slow]
            ratio = ' / '.join(f'{ours.throughput(m) / peer.throughput(m):.2f}x'
                               for m in ('infer', 'train'))
            lines.append(f'| {ours.name} over {peer.name} | {fast_paper / slow_paper:.2f}x '
                         f'({fast_paper} / {slow_paper} img/s) | {ratio} |')
    if not lines:
        return ''
    return '\n'.join(['| speed ratio | paper, V100, inference | here, infer / train |',
                      '| --- | --- | --- |'] + lines)


def dense_benches(args, references) -> List[Bench]:
    benches = []
    for name, (config, size, parts) in DENSE.items():
        model, _ = build_from_config(osp.join(REPO, config))
        torch.manual_seed(0)
        x = torch.randn(2, 3, *size, device=args.device)  # train on 2: UPerNet's PPM has BN
        heads = [getattr(model, p) for p in parts]
        full = nn.Sequential(model.backbone, *heads).to(args.device)
        flop = forward_flop(full, (3, *size))
        base = Bench(f'{name}, {BASE}, {size[0]}x{size[1]}', full, x[:1], args,
                     train_inputs=x, flop=flop)
        benches.append(base)
        for ref_name, build in references.items():
            backbone = build(model.backbone).to(args.device)
            check_same_outputs(backbone, model.backbone, x[:1], ref_name)
            check_same_gradients(backbone, model.backbone, x, ref_name)
            benches.append(Bench(f'{name}, {ref_name}, {size[0]}x{size[1]}',
                                 nn.Sequential(backbone, *heads), x[:1], args, base=base,
                                 train_inputs=x, flop=flop))
    return benches


def run_table(title: str, benches: List[Bench], args,
              peaks: Optional[Dict[str, Bench]] = None):
    """Time ``benches`` and the GEMM peaks (fp32's, and ``peaks`` of other
    precisions) in the same interleaved rounds and print their Markdown table
    under ``title``."""
    fp32 = GemmPeak(args)
    fp32.train = any(b.train for b in benches)  # timed only in the modes of the rows
    peaks = {'fp32': fp32, **(peaks or {})}
    measure(benches + list(peaks.values()), args)
    print(f'\n{title}:\n')
    print(table(benches, args, peaks))


def lightvit_tables(args, references):
    """``--tables lightvit``: LightViT-T's paths at ``--size`` (inference and
    training step), at ``--single-image`` batch 1 (inference), and with
    ``--compile`` what ``torch._dynamo.explain`` says."""
    run_table(f'{BASE}, {args.size}x{args.size}, batch {args.batch_size} (last stage out)',
              lightvit_benches(args, references, args.size, args.batch_size, train=True), args)
    if args.single_image:
        size = args.single_image
        run_table(f'{BASE}, {size}x{size}, batch 1, inference (last stage out)',
                  lightvit_benches(args, references, size, 1, train=False), args)
    if args.compile:
        print('\n' + explain_compile(build_peer(BASE).to(args.device),
                                     torch.randn(1, 3, args.size, args.size,
                                                 device=args.device)))


def backbone_tables(args, references):
    """``--tables backbones``: the peers, and the paper's V100 ratios beside ours."""
    benches = backbone_benches(args, references)
    run_table(f'Backbones, {args.size}x{args.size}, batch {args.batch_size} (last stage '
              'out)', benches, args)
    paper = paper_table(benches)
    if paper:
        print(f'\nThe paper\'s speed ratios beside ours ({args.amp}, batch '
              f'{args.batch_size}):\n\n{paper}')


def dense_tables(args, references):
    """``--tables dense``: Mask R-CNN backbone + neck and UPerNet backbone + head."""
    run_table(f'Dense prediction, inference on 1 image, training step on 2 (speed-up: '
              f'{BASE} of lightvit_mm over each row)', dense_benches(args, references), args)


def _agreement(row_outputs, reference) -> str:
    """Relative L2 and max |difference| / max |reference| of a row's outputs
    (tensors or numpy arrays, flat or nested) against the eager fp32 ones,
    the worst over the outputs."""
    def tensors(out):  # runtime rows give lists of numpy arrays
        if isinstance(out, (list, tuple)):
            return [t for item in out for t in tensors(item)]
        return [torch.as_tensor(out).float()]
    got, ref = tensors(row_outputs), tensors(reference)
    rel_l2 = max(float((g - r).norm() / r.norm()) for g, r in zip(got, ref))
    rel_max = max(float((g - r).abs().max() / r.abs().max()) for g, r in zip(got, ref))
    return f'relative L2 {rel_l2:.1e}, max {rel_max:.1e}'


def _deploy_rows(name: str, model: nn.Module, export: nn.Module, x: torch.Tensor, args,
                 references, folder: str, flop: float) -> List[Bench]:
    """The rows of one batched input: ``model`` eager fp32 (the base row),
    ``export`` (its deploy-mode copy) compiled with inductor's freezing, the
    ``references`` (row label -> builder from ``model``; the official code,
    outputs checked first), PyTorch bf16, and the ONNX graph of
    ``export`` in each runtime and precision; each row's agreement with the
    eager outputs is kept in ``agreement``."""
    from lightvit_mm.deploy import speed_rows
    base = Bench(f'{name} eager fp32', model, x, args, train=False, flop=flop)
    benches = [base]
    if not args.no_compile:
        benches.append(Bench(f'{name} compiled fp32 (deploy mode, freezing)',
                             torch.compile(copy.deepcopy(export), options={'freezing': True}),
                             x, args, train=False, base=base, flop=flop))
    for label, build in references.items():
        reference = build(model)
        check_same_outputs(reference, model, x, f'{name} {label}')
        benches.append(Bench(f'{name} {label} eager fp32', reference, x, args, train=False,
                             base=base, flop=flop))
    rows = speed_rows.pytorch_rows(export, x, compile=not args.no_compile)
    onnx = speed_rows.export_static_onnx(export, x, osp.join(folder, 'graph.onnx'))
    rows.update(speed_rows.runtime_rows(onnx, x, folder))
    for row_name, row in rows.items():
        benches.append(CallBench(f'{name} {row_name}', row, len(x), args, base=base, flop=flop))
    with torch.inference_mode():
        expected = model(x)
    for bench in benches[1:]:
        bench.agreement = _measured(lambda: _agreement(
            bench.call() if isinstance(bench, CallBench) else bench.model(x), expected))
    return benches


def _agreement_lines(benches: List[Bench]) -> str:
    return '\n'.join(f'- {b.name}: {b.agreement}' for b in benches if hasattr(b, 'agreement'))


class Logits(nn.Module):
    """An mmpretrain classifier as a module of images: ``model(x, mode='tensor')``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x, mode='tensor')


def deploy_tables(args, references):
    """``--tables deploy``: the same weights as PyTorch eager and compiled and in
    ONNX Runtime and OpenVINO, in fp32, bf16 and int8 (CPU): LightViT-T's
    backbone at 224x224 batch 8 and 512x512 batch 1, the whole classifier at
    224x224 batch 8, and the whole Mask R-CNN (800x1333) and UPerNet
    (512x2048, whole) on one image with where their time goes. Each table's
    rows are timed in the same rounds as fp32, bf16 and int8 GEMM peaks."""
    import tempfile

    from mmengine.config import Config

    from lightvit_mm.deploy import speed_rows
    from lightvit_mm.deploy.rewrites import rewrite_for_export
    if args.device.type != 'cpu':
        raise SystemExit('--tables deploy runs on the CPU (ONNX Runtime / OpenVINO CPU)')
    officials = {OFFICIAL: references[f'{BASE} {OFFICIAL}']} \
        if f'{BASE} {OFFICIAL}' in references else {}
    official_classifier = {}
    if args.official_classification:
        build = official_classifier_builder(args.official_classification)
        official_classifier[OFFICIAL] = lambda logits: build(logits.model)
    with tempfile.TemporaryDirectory() as tmp:
        peaks = {row.precision: CallBench(name, row, 1, args)
                 for name, row in speed_rows.gemm_rows().items() if row.precision != 'fp32'}
        for size, batch in ((224, 8), (512, 1)):
            torch.manual_seed(0)
            model = build_peer(BASE).eval()
            export = copy.deepcopy(model)
            export.switch_to_deploy()
            x = torch.randn(batch, 3, size, size)
            folder = tempfile.mkdtemp(dir=tmp)
            benches = _deploy_rows(BASE, model, export, x, args, officials, folder,
                                   forward_flop(model, (3, size, size)))
            run_table(f'Deploy: {BASE} backbone, {size}x{size}, batch {batch} (last stage out)',
                      benches, args, peaks)
            print('\nOutputs against eager fp32:\n' + _agreement_lines(benches))

        cfg = osp.join(REPO, 'configs/mmpretrain/lightvit-tiny_8xb128_in1k.py')
        torch.manual_seed(0)
        classifier, _ = build_from_config(cfg)
        model = Logits(classifier.eval())
        export = copy.deepcopy(model)
        export.model.backbone.switch_to_deploy()
        rewrite_for_export(export)
        x = torch.randn(8, 3, 224, 224)
        benches = _deploy_rows(f'{BASE} classifier', model, export, x, args, official_classifier,
                               tempfile.mkdtemp(dir=tmp), forward_flop(model, (3, 224, 224)))
        run_table(f'Deploy: {BASE} classifier (backbone, neck, head), 224x224, batch 8',
                  benches, args, peaks)
        print('\nOutputs against eager fp32:\n' + _agreement_lines(benches))

        for title, config, shape, options in (
                ('Mask R-CNN', 'configs/mmdet/mask-rcnn_lightvit-t_lightvit-fpn_1x_coco.py',
                 (800, 1333), {'model.test_cfg.rcnn.score_thr': 0.0}),
                ('UPerNet', 'configs/mmseg/lightvit-t-in1k-pre_upernet_8xb2-160k_ade20k-'
                 '512x512.py', (512, 2048), {})):
            cfg = Config.fromfile(osp.join(REPO, config))
            cfg.merge_from_dict(options)
            folder = tempfile.mkdtemp(dir=tmp)
            rows, models = speed_rows.whole_model_rows(cfg, shape, folder)
            benches = [CallBench(f'{title} {BASE} {name}', row, 1, args)
                       for name, row in rows.items()]
            for bench in benches[1:]:
                bench.base, bench.group = benches[0], id(benches[0])
            # seconds per call: one iteration per timing, at most 1 + 3 rounds
            whole = copy.copy(args)
            whole.iters, whole.warmup, whole.repeats = 1, min(args.warmup, 1), min(args.repeats, 3)
            run_table(f'Deploy: whole {title}, {BASE}, one {shape[0]}x{shape[1]} image '
                      f'(random weights; {config}; median of {whole.repeats} rounds)', benches,
                      whole, peaks)
            print(f'\n{title}: where the time goes (ms per image, one call each):\n')
            parts = {name: speed_rows.time_parts(row.call, models[name], repeats=1)
                     for name, row in rows.items()}
            columns = sorted({p for v in parts.values() for p in v} - {'rest', 'total'})
            print('| row | ' + ' | '.join(columns) + ' | rest | total |')
            print('|' + ' --- |' * (len(columns) + 3))
            for name, times in parts.items():
                print(f'| {name} | ' + ' | '.join(f'{times[c]:.0f}' if c in times else '-'
                                                  for c in columns + ['rest', 'total']) + ' |')


#: ``--tables`` name -> function(args, references) that measures and prints
#: those tables; printed in this order whatever the order given
TABLES: Dict[str, Callable] = {
    'lightvit': lightvit_tables,
    'backbones': backbone_tables,
    'dense': dense_tables,
    'deploy': deploy_tables,
}


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
    parser.add_argument('--models', nargs='*', default=[n for n in ALL_MODELS
                                                         if n not in TIMM_PEERS],
                        help='backbones besides LightViT-T (default: all but the timm ones)')
    parser.add_argument('--tables', nargs='+', choices=list(TABLES),
                        default=[t for t in TABLES if t != 'deploy'],
                        help='lightvit: LightViT-T\'s paths (eager, deploy, compiled) and the '
                        'references at 224x224 (inference and training) and 512x512 batch 1 '
                        '(inference); backbones: peers at 224x224; dense: Mask R-CNN and UPerNet; '
                        'deploy (CPU, not by default): PyTorch, ONNX Runtime and OpenVINO in '
                        'fp32, bf16 and int8, backbone, classifier, whole Mask R-CNN and UPerNet')
    parser.add_argument('--no-compile', action='store_true',
                        help='--tables deploy: leave out the torch.compile rows')
    parser.add_argument('--official', metavar='DIR',
                        help='clone of github.com/hunto/LightViT to time its code too')
    parser.add_argument('--official-classification', metavar='DIR',
                        help='--tables deploy: clone of github.com/hunto/image_classification_sota '
                        'to time the official classifier too')
    parser.add_argument('--ref', action='append', default=[], metavar='GITREF',
                        help='also time lightvit_mm\'s backbone as of this commit (repeatable)')
    parser.add_argument('--compile', nargs='*', metavar='MODE',
                        help='add a torch.compile(LightViT-T) row per inductor mode given '
                        '(none: default; e.g. default max-autotune-no-cudagraphs '
                        'reduce-overhead), with default also deploy mode with inductor '
                        'freezing, and explain its graph breaks')
    parser.add_argument('--compile-backend', default='inductor',
                        help='torch.compile backend (default inductor; another one, e.g. '
                        'aot_eager, gets one row and no modes)')
    parser.add_argument('--compile-train', action='store_true',
                        help='with --compile, also time the compiled training step (its '
                        'compilation takes many minutes on a small CPU)')
    parser.add_argument('--cuda-graph', action='store_true',
                        help='add a row of the eager LightViT-T replayed as CUDA graphs '
                        '(inference and training step; GPU only)')
    parser.add_argument('--size', type=int, default=224,
                        help='input side of the batched lightvit and backbones tables '
                        '(default 224)')
    parser.add_argument('--single-image', type=int, default=512, metavar='SIZE',
                        help='side of the batch-1 inference table of --tables lightvit '
                        '(default 512; 0: leave that table out)')
    args = parser.parse_args(argv)
    unknown = sorted(set(args.models) - set(ALL_MODELS))
    if unknown:
        parser.error(f'unknown --models {unknown}; accepted: {ALL_MODELS}')
    if args.compile == []:
        args.compile = ['default']
    if args.device == 'auto':
        args.device = 'cuda' if torch.cuda.is_available() else 'cpu'
    args.device = torch.device(args.device)
    if args.device.type == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda given but torch sees no GPU')
    if args.amp == 'fp16' and args.device.type == 'cpu':
        parser.error('--amp fp16 needs a GPU; on CPU use --amp bf16')
    if args.cuda_graph and args.device.type != 'cuda':
        parser.error('--cuda-graph needs --device cuda')
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
    from lightvit_mm.deploy.precision import cpu_capabilities
    device = (torch.cuda.get_device_name(args.device) if args.device.type == 'cuda'
              else f'{platform.machine()}, {cpu_capabilities().describe()}')
    print(f'device: {args.device} ({device}); torch {torch.__version__}; '
          f'{torch.get_num_threads()} CPU threads; precision {args.amp}; '
          f'median of {args.repeats} interleaved rounds after {args.warmup} warm-up, '
          f'{args.iters} iteration(s) per timing')
    references = reference_builders(args.official, args.ref)
    for name, print_tables in TABLES.items():  # in the registry's order
        if name in args.tables:
            print_tables(args, references)
    print('\nactivations: tensors autograd keeps for backward in one training forward '
          '(parameters excluded). train: forward + backward, no optimizer step. GFLOP/s: '
          'forward FLOP (2 x multiply-adds, attention included) x images/s, x3 for a '
          'training step. spread: (slowest - fastest) / median round.')


if __name__ == '__main__':
    main()

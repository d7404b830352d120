# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""LightViT's GPU check in one call: training gradients against float64, and
the benchmark with the official code, the peers, ``torch.compile`` and CUDA
graphs; every table written into one folder.

Run through ``tools/analysis/gpu_check.sh OUT_DIR [options]`` (docs/gpu.md),
which first installs carried wheels where mmengine is missing. The phases
(``--phases`` picks some) run in the order of :func:`plan`, most needed
first; on a GPU a phase starts only if its estimated time fits in what is
left of ``--budget``, and a phase that fails writes its traceback beside
what it produced and the next one runs:

- ``gradients``: LightViT-T, random weights, one training step on a batch
  of 8 and one of 64 at 224x224 (drop path off; loss: the outputs of the
  three stages, each element weighted by ``linspace(-1, 1)``). The parameter
  gradients of ours (fp32), of ours with torch's fused
  ``scaled_dot_product_attention`` taking the position-bias gradient in the
  window attention, and of the official code (fp32), TF32 off, each against
  autograd through the plain formula ``softmax(q k^T / sqrt(d) + bias) v``
  in float64 on the same device: relative L2 and largest absolute
  difference per parameter group. Then the fused kernel alone on the
  stage-1 window-attention shapes, per backend and bias layout (a minimal
  reproducer).
- ``backbones-B-PRECISION``: ``benchmark.py --tables backbones`` (LightViT-T
  with and without ``with_cp``, LightViT-T/S/B ours and official,
  PVTv2-B0, MobileViT-XS and Swin-T from timm; inference and training step,
  peak memory; the paper's V100 ratios beside ours) at batch 64 and 256, in
  fp32, fp16 and bf16 autocast.
- ``compile``: ``benchmark.py --tables lightvit`` at batch 64, fp16
  autocast: eager, deploy, ``torch.compile`` (default mode; deploy mode
  with freezing) and the official code, inference and training step, with
  compile times; ``graphs``: the same with ``torch.compile`` in
  ``reduce-overhead`` mode and the eager model as CUDA graphs;
  ``autotune``: with ``max-autotune-no-cudagraphs`` (long compilation).
- ``test_cuda``: ``pytest tests/test_models/test_cuda.py -k official`` (outputs and
  gradients against the official code on the GPU).

Files written (the device tool of this project brings back at most 8):
``summary.md`` (machine, versions, each phase's status and seconds),
``gradients.md``, ``backbones.md``, ``compile.md``, ``test_cuda.txt``.

``--device cpu`` is a smoke test of the same code for CI, at tiny sizes:
64x64 inputs, batches 1 and 2, one iteration, one thread, fp32 only,
LightViT-S, PVTv2-B0 and Swin-T as the only other backbones, and compiled
inference only (``torch.compile`` with the ``eager`` backend; no CUDA
graphs).
"""
import argparse
import contextlib
import copy
import gc
import importlib.util
import io
import math
import os
import os.path as osp
import platform
import re
import shlex
import subprocess
import sys
import time
import traceback
import types
from typing import Callable, Dict, List, NamedTuple, Optional

import torch
import torch._dynamo
import torch.nn.functional as F

from lightvit_mm import LightViT
from lightvit_mm.analysis.official_reference import exact_fp32, reference_builders, weighted_grads
from lightvit_mm.models.backbones import lightvit as lightvit_module

HERE = osp.dirname(osp.abspath(__file__))
REPO = osp.dirname(osp.dirname(HERE))

START = time.monotonic()
CARRIED_OFFICIAL = osp.join(REPO, '.gpu_check', 'LightViT')  # where the prepare script puts it
FP32_TOLERANCE = 1e-3  # relative L2 to float64 that fp32 arithmetic stays far under
GROUPS = (  # parameter group -> pattern of its names (first match wins)
    ('stem (patch_embed)', r'^patch_embed\.'),
    ('global tokens', r'^global_token$'),
    ('position bias tables', r'relative_position_bias_table$'),
    ('attention qkv, kv_global, proj', r'\.attn\.(qkv|kv_global|proj)\.'),
    ('FFN bi-dimensional attention', r'\.mlp\.attn\.'),
    ('FFN fc1, fc2', r'\.mlp\.fc\d\.'),
    ('block norms', r'\.norm[12]\.'),
    ('residual patch merging', r'^stages\.\d+\.\d+\.(norm|proj|reduction|res_proj)\.'),
    ('output norms', r'^norm\d+\.'),
)
BENCH_MODELS = ['LightViT-S', 'LightViT-B', 'PVTv2-B0 (timm)', 'MobileViT-XS (timm)',
                'Swin-T (timm)']


def plain_attention(q, k, v, bias):
    """``softmax(q k^T / sqrt(d) + bias) v`` as explicit autograd operations."""
    attn = torch.matmul(q, k.transpose(-2, -1)) * q.shape[-1]**-0.5 + bias
    return torch.matmul(attn.softmax(-1), v)


def fused_attention(q, k, v, bias):
    """torch's ``scaled_dot_product_attention``, which also returns the bias gradient."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)


@contextlib.contextmanager
def window_attention(function: Callable):
    """Run the training-time window attention of every LightViT of
    lightvit_mm through ``function(q, k, v, bias)`` instead of
    ``WindowAttentionWithBias``, while the context lasts.

    Raises:
        RuntimeError: on leaving, ``function`` was never called (the backbone
            no longer calls ``WindowAttentionWithBias.apply``).
    """
    calls = []

    def counted(*args):
        calls.append(1)
        return function(*args)
    original = lightvit_module.WindowAttentionWithBias
    lightvit_module.WindowAttentionWithBias = types.SimpleNamespace(apply=counted)
    try:
        yield
    finally:
        lightvit_module.WindowAttentionWithBias = original
    if not calls:
        raise RuntimeError('window_attention: the backbone never called '
                           'WindowAttentionWithBias.apply; update gpu_check.py')


def group_of(name: str) -> str:
    return next((group for group, pattern in GROUPS if re.search(pattern, name)), 'other')


def relative_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-300))


def compare_grads(grads: Dict[str, torch.Tensor], ref: Dict[str, torch.Tensor]) -> List[dict]:
    """Per parameter group of ``ref``: relative L2 of the whole group, the
    parameter with the largest relative L2, and the largest absolute
    difference (with the largest absolute reference value, for scale).

    Raises:
        KeyError: ``grads`` lacks a parameter that has a gradient in ``ref``.
    """
    missing = sorted(set(ref) - set(grads))
    if missing:
        raise KeyError(f'no gradient for {missing[:5]} ({len(missing)} parameters)')
    rows = []
    for group in dict.fromkeys(group_of(n) for n in ref):
        names = [n for n in ref if group_of(n) == group]
        diff = torch.cat([(grads[n].double() - ref[n].double()).flatten() for n in names])
        reference = torch.cat([ref[n].double().flatten() for n in names])
        worst = max(names, key=lambda n: relative_l2(grads[n], ref[n]))
        rows.append(dict(group=group, params=len(names),
                         rel_l2=float(diff.norm() / reference.norm().clamp_min(1e-300)),
                         worst=worst, worst_rel_l2=relative_l2(grads[worst], ref[worst]),
                         max_abs=float(diff.abs().max()), ref_max=float(reference.abs().max())))
    return rows


def training_gradients(device: torch.device, batch: int, size: int,
                       official: Optional[str]) -> Dict[str, dict]:
    """One training step of LightViT-T (random weights, drop path off) per
    variant: ours (fp32), ours with the fused kernel's bias gradient, the
    official code (fp32; with ``official``), all with TF32 off, and the
    float64 plain-formula reference. Returns variant -> dict(outputs=...,
    grads=...), the reference under ``'float64 reference'``."""
    torch.manual_seed(0)
    model = LightViT(arch='tiny', out_indices=(0, 1, 2), drop_path_rate=0.)
    model.init_weights()
    x = torch.randn(batch, 3, size, size, device=device)
    variants = {
        'float64 reference': (lambda: copy.deepcopy(model).double(), plain_attention),
        'ours': (lambda: copy.deepcopy(model), None),
        'ours, fused SDPA bias gradient': (lambda: copy.deepcopy(model), fused_attention),
    }
    if official:
        build_official = next(iter(reference_builders(official, []).values()))

        def official_model():
            built = build_official(model)
            for module in built.modules():
                if hasattr(module, 'drop_prob'):
                    module.drop_prob = 0.
            return built
        variants['official code'] = (official_model, None)
    results = {}
    for name, (build, attention) in variants.items():
        net = build().to(device).train()
        inputs = x.double() if name == 'float64 reference' else x
        with exact_fp32(), (window_attention(attention) if attention
                            else contextlib.nullcontext()):
            outs, grads = weighted_grads(net, inputs)
        results[name] = dict(outputs=outs, grads=grads)
        del net
    return results


def gradient_table(results: Dict[str, dict], batch: int, size: int) -> str:
    ref = results['float64 reference']
    lines = [f'### LightViT-T, batch {batch}, {size}x{size}, one training step, '
             'against the float64 plain formula on the same device\n',
             '| variant | parameter group | params | relative L2 | worst parameter | '
             'its relative L2 | max abs difference | max abs reference |',
             '| --- | --- | --- | --- | --- | --- | --- | --- |']
    verdict = []
    for name, result in results.items():
        if name == 'float64 reference':
            continue
        pairs = list(zip(result['outputs'], ref['outputs']))
        out_l2 = max(relative_l2(o, r) for o, r in pairs)
        out_abs = max(float((o.double() - r).abs().max()) for o, r in pairs)
        lines.append(f'| {name} | outputs (3 stages) | - | {out_l2:.1e} | - | - | {out_abs:.1e} '
                     '| - |')
        rows = compare_grads(result['grads'], ref['grads'])
        for row in rows:
            lines.append(f'| {name} | {row["group"]} | {row["params"]} | {row["rel_l2"]:.1e} | '
                         f'{row["worst"]} | {row["worst_rel_l2"]:.1e} | {row["max_abs"]:.1e} | '
                         f'{row["ref_max"]:.1e} |')
        worst = max(rows, key=lambda r: r['worst_rel_l2'])
        verdict.append(f'- {name}: worst parameter {worst["worst"]}, relative L2 '
                       f'{worst["worst_rel_l2"]:.1e}: '
                       + ('agrees with float64' if worst['worst_rel_l2'] < FP32_TOLERANCE
                          else f'WRONG (fp32 stays far under {FP32_TOLERANCE:g})'))
    return '\n'.join(lines + [''] + verdict)


def sdpa_reproducer(device: torch.device, windows: int) -> str:
    """torch's fused attention alone, with a bias that needs a gradient, on
    LightViT-T's stage-1 window attention shapes at 224x224 (``windows``
    windows of 7x7 tokens, 2 heads of 32 channels; bias (1, 2, 49, 49),
    broadcast over the windows), per backend and bias layout, against the
    float64 plain formula: relative L2 of the output and of each gradient."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    torch.manual_seed(0)
    shape = (windows, 2, 49, 32)
    q, k, v, grad_out = (torch.randn(shape, device=device) for _ in range(4))
    bias = torch.randn(1, 2, 49, 49, device=device)

    def run(dtype, layout, attention):
        leaves = [t.to(dtype, copy=True).requires_grad_() for t in (q, k, v, bias)]
        mask = leaves[3]
        if layout == 'expanded view':
            mask = mask.expand(windows, -1, -1, -1)
        elif layout == 'materialised':
            mask = mask.expand(windows, -1, -1, -1).contiguous()
        out = attention(*leaves[:3], mask)
        out.backward(grad_out.to(dtype))
        return [out.detach()] + [t.grad for t in leaves]
    layouts = ('broadcast (1, 2, 49, 49)', 'expanded view', 'materialised')
    backends = [('default', None), ('math', SDPBackend.MATH),
                ('efficient', SDPBackend.EFFICIENT_ATTENTION),
                ('cuDNN', SDPBackend.CUDNN_ATTENTION)]
    lines = [f'### Fused attention alone, q/k/v {shape} float32, bias (1, 2, 49, 49) float32 '
             f'needing a gradient; relative L2 to float64; torch {torch.__version__}\n',
             '| backend | bias layout | output | dq | dk | dv | dbias | attention kernels |',
             '| --- | --- | --- | --- | --- | --- | --- | --- |']
    for layout in layouts:
        ref = run(torch.float64, layout, plain_attention)
        for label, backend in backends + [('default, again', None)]:
            kernel = sdpa_kernel([backend]) if backend else contextlib.nullcontext()
            try:
                profile = device.type == 'cuda' and backend is None  # the default's kernels
                with kernel, attention_kernels(profile) as kernels:
                    got = run(torch.float32, layout, fused_attention)
                cells = [f'{relative_l2(g, r):.1e}' for g, r in zip(got, ref)]
                cells.append(', '.join(kernels) or '-')
            except RuntimeError as error:
                cells = [f'not accepted ({str(error).splitlines()[0][:60]})'] + [''] * 5
            lines.append(f'| {label} | {layout} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


@contextlib.contextmanager
def attention_kernels(enabled: bool):
    """The names (60 characters) of the attention CUDA kernels run while
    the context lasts, filled in on leaving; left empty unless ``enabled``."""
    names: List[str] = []
    if not enabled:
        yield names
        return
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        yield names
        torch.cuda.synchronize()
    pattern = re.compile(r'fmha|attention|flash|cudnn|sdpa|softmax', re.IGNORECASE)
    names += sorted({e.name[:60] for e in prof.events()
                     if e.device_type.name == 'CUDA' and pattern.search(e.name)})


class PhaseFailed(Exception):
    """A phase failed after producing ``text`` (kept in its file)."""

    def __init__(self, reason: str, text: str):
        super().__init__(reason)
        self.text = text


def phase_gradients(args) -> str:
    parts = []
    try:
        for batch in args.grad_batches:
            results = training_gradients(args.device, batch, args.size, args.official)
            parts.append(gradient_table(results, batch, args.size))
            del results
            parts.append(sdpa_reproducer(args.device, windows=16 * batch))
    except Exception as error:  # keep the tables made so far
        parts.append(f'```\n{traceback.format_exc()}```')
        raise PhaseFailed(f'{type(error).__name__}: {error}', '\n\n'.join(parts)) from error
    return '\n\n'.join(parts)


def load_benchmark() -> types.ModuleType:
    """``tools/analysis/benchmark.py`` (beside this script) as a module, run
    in this process: a phase then costs no new interpreter, CUDA context or
    imports."""
    spec = importlib.util.spec_from_file_location('benchmark', osp.join(HERE, 'benchmark.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def benchmark_phase(argv: List[str]) -> Callable:
    """A phase that runs ``benchmark.py argv`` and returns what it printed."""
    def run(args) -> str:
        benchmark = load_benchmark()
        common = ['--device', args.device.type, '--size', str(args.size)]
        if args.official:
            common += ['--official', args.official]
        printed = io.StringIO()
        text = f'`benchmark.py {shlex.join(common + argv)}`\n\n'
        try:
            with contextlib.redirect_stdout(printed):
                benchmark.main(common + argv)
        except Exception as error:
            raise PhaseFailed(f'{type(error).__name__}: {error}', text + printed.getvalue()
                              + f'\n\n```\n{traceback.format_exc()}```') from error
        return text + printed.getvalue()
    return run


def phase_test_cuda(args) -> str:
    env = dict(os.environ)
    if args.official:
        env['LIGHTVIT_OFFICIAL'] = args.official
    command = [sys.executable, '-m', 'pytest', 'tests/test_models/test_cuda.py', '-k',
               'official', '-s', '-q', '-p', 'no:cacheprovider']
    left = args.budget - elapsed()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=max(60., left) if math.isfinite(left) else None)
    text = f'$ {" ".join(command[2:])}\n\n{done.stdout}{done.stderr}'
    if done.returncode:
        raise PhaseFailed(f'pytest exit status {done.returncode}', text)
    return text


class Phase(NamedTuple):
    name: str
    seconds: float  # estimated on an H100 / H200
    file: str
    run: Callable


def plan(args) -> List[Phase]:
    """The phases in order of what matters most to the GPU run."""
    gpu = args.device.type == 'cuda'
    timing = (['--warmup', '1', '--repeats', '3'] if gpu
              else ['--warmup', '0', '--repeats', '1', '--iters', '1'])

    # CPU: the peers that cover each code path (sizes with official rows, timm with and
    # without a size argument, a paper ratio), no half precision, compiled inference only
    models = BENCH_MODELS if gpu else ['LightViT-S', 'PVTv2-B0 (timm)', 'Swin-T (timm)']

    def backbones(batch, amp, seconds):
        iters = ['--iters', '10' if batch <= 64 else '3'] if gpu else []
        return Phase(f'backbones-{batch}-{amp}', seconds, 'backbones.md', benchmark_phase(
            ['--tables', 'backbones', '--batch-size', str(batch), '--amp', amp, '--models',
             *models] + timing + iters))

    def compiled(name, options, seconds):
        extra = (['--amp', 'fp16', '--compile-train', '--iters', '10'] if gpu
                 else ['--compile-backend', 'eager'])
        return Phase(name, seconds, 'compile.md', benchmark_phase(
            ['--tables', 'lightvit', '--single-image', '0', '--batch-size', str(args.batch)]
            + options + timing + extra))
    if not gpu:
        return [Phase('gradients', 0, 'gradients.md', phase_gradients),
                backbones(1, 'fp32', 0), compiled('compile', ['--compile'], 0),
                backbones(2, 'fp32', 0), Phase('test_cuda', 0, 'test_cuda.txt', phase_test_cuda)]
    return [
        Phase('gradients', 40, 'gradients.md', phase_gradients),
        backbones(64, 'fp32', 60),
        backbones(64, 'fp16', 60),
        compiled('compile', ['--compile', 'default'], 120),
        backbones(256, 'fp32', 50),
        backbones(256, 'fp16', 35),
        Phase('test_cuda', 40, 'test_cuda.txt', phase_test_cuda),
        # CUDA graphs last but one: a failed capture can leave the GPU unusable for the rest
        compiled('graphs', ['--compile', 'reduce-overhead', '--cuda-graph'], 90),
        compiled('autotune', ['--compile', 'max-autotune-no-cudagraphs'], 150),
        backbones(64, 'bf16', 60),
        backbones(256, 'bf16', 35),
    ]


def elapsed() -> float:
    return time.monotonic() - START


def environment(args) -> List[str]:
    """What the figures were measured on."""
    def command(*cmd):
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd=REPO)
            return done.stdout.strip() or done.stderr.strip()[:200]
        except (OSError, subprocess.SubprocessError) as error:
            return f'({error})'
    lines = [f'- python {platform.python_version()}, torch {torch.__version__} '
             f'(CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}), '
             f'{os.cpu_count()} CPU cores']
    versions = []
    for package in ('mmengine', 'mmcv', 'timm', 'numpy'):
        try:
            versions.append(f'{package} {__import__(package).__version__}')
        except ImportError:
            versions.append(f'{package} missing')
    lines.append('- ' + ', '.join(versions))
    if args.device.type == 'cuda':
        lines.append(f'- GPU: {torch.cuda.get_device_name()}; nvidia-smi: ' + command(
            'nvidia-smi', '--query-gpu=name,driver_version,memory.total', '--format=csv,noheader'))
    else:
        lines.append(f'- CPU: {platform.processor() or platform.machine()}')
    lines.append(f'- lightvit-mm commit: {command("git", "rev-parse", "--short", "HEAD")}; '
                 f'official code: {args.official or "not given"}')
    return lines


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', required=True, help='folder the tables are written into')
    parser.add_argument('--device', default='cuda', choices=('cuda', 'cpu'),
                        help='cuda (default) or cpu: a smoke test at tiny sizes')
    parser.add_argument('--official', default=os.environ.get('LIGHTVIT_OFFICIAL'),
                        help='clone of github.com/hunto/LightViT (default: $LIGHTVIT_OFFICIAL, '
                        'else .gpu_check/LightViT if there)')
    parser.add_argument('--budget', type=float,
                        help='seconds from the start: a phase starts only if its estimate fits '
                        '(default 450 on a GPU, none on CPU)')
    parser.add_argument('--phases', nargs='+', metavar='PHASE',
                        help='run only these phases (names as in summary.md)')
    args = parser.parse_args(argv)
    if args.official is None and osp.isfile(osp.join(CARRIED_OFFICIAL, 'detection',
                                                     'lightvit.py')):
        args.official = CARRIED_OFFICIAL
    args.device = torch.device(args.device)
    gpu = args.device.type == 'cuda'
    if gpu and not torch.cuda.is_available():
        parser.error('--device cuda given but torch sees no GPU; --device cpu is the smoke test')
    if args.budget is None:
        args.budget = 450. if gpu else math.inf
    args.size, args.batch = (224, 64) if gpu else (64, 1)  # of the compile phase
    args.grad_batches = (8, 64) if gpu else (1, 2)
    names = [p.name for p in plan(args)]
    unknown = sorted(set(args.phases or []) - set(names))
    if unknown:
        parser.error(f'unknown --phases {unknown}; accepted: {names}')
    return args


def main(argv=None) -> List[dict]:
    """Run the phases; returns one dict(name, status, seconds, file) per phase.
    ``summary.md`` is rewritten after each phase, so a run stopped from
    outside still leaves one for the phases done."""
    args = parse_args(argv)
    if args.device.type == 'cpu':  # a smoke test measures nothing: one thread does not
        torch.set_num_threads(1)   # stall on busy cores (two threads were 40x slower here)
    os.makedirs(args.out, exist_ok=True)
    phases = [p for p in plan(args) if not args.phases or p.name in args.phases]
    for name in {p.file for p in phases}:
        with open(osp.join(args.out, name), 'w'):
            pass
    header = ['# LightViT GPU check', ''] + environment(args)
    print('\n'.join(header), file=sys.stderr)
    report = []

    def write_summary():
        summary = (header + ['', '| phase | status | seconds | file |', '| --- | --- | --- | --- |']
                   + [f'| {r["name"]} | {r["status"]} | {r["seconds"]:.0f} | {r["file"]} |'
                      for r in report]
                   + ['', f'total {elapsed():.0f} s (budget {args.budget:g} s)'])
        with open(osp.join(args.out, 'summary.md'), 'w') as f:
            f.write('\n'.join(summary) + '\n')
        return summary
    for phase in phases:
        left = args.budget - elapsed()
        if phase.seconds > left:
            report.append(dict(name=phase.name, status=f'skipped: estimated {phase.seconds:.0f} s,'
                               f' {max(left, 0):.0f} s of --budget left', seconds=0.,
                               file=phase.file))
            continue
        print(f'[gpu_check] {phase.name} ({elapsed():.0f} s in)', file=sys.stderr, flush=True)
        start = time.monotonic()
        try:
            text, status = phase.run(args), 'done'
        except PhaseFailed as error:
            text, status = error.text, f'failed: {str(error)[:120]}'
        except Exception as error:
            text = f'FAILED:\n\n```\n{traceback.format_exc()}```'
            status = f'failed: {type(error).__name__}: {str(error)[:120]}'
        status = ' '.join(status.split())  # one table cell
        seconds = time.monotonic() - start
        with open(osp.join(args.out, phase.file), 'a') as f:
            f.write(f'## {phase.name} ({seconds:.0f} s)\n\n{text}\n\n')
        report.append(dict(name=phase.name, status=status, seconds=seconds, file=phase.file))
        write_summary()
        gc.collect()
        if args.device.type == 'cuda':
            torch.cuda.empty_cache()
        torch._dynamo.reset()
    print('\n'.join(write_summary()))
    return report


if __name__ == '__main__':
    main()

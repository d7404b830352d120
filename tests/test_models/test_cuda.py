"""LightViT on a CUDA GPU: what CI (which has no GPU) cannot check.

Skipped without a GPU. On a GPU machine: ``pytest tests/test_models/test_cuda.py -s``
(``-s`` prints the measured differences); with ``LIGHTVIT_OFFICIAL`` set to a
clone of github.com/hunto/LightViT it also compares LightViT-T/S/B with the
official code on the GPU. docs/benchmarks.md gives the figures of a run on an H100.

- fp32: the official reference vectors (computed on the CPU) are reproduced
  on the GPU within 1e-4 (cuDNN's TF32 convolutions off, as the reference).
- AMP: a training step under ``torch.autocast`` in float16 and bfloat16
  (eager and with ``with_cp``) gives finite outputs and gradients close to
  fp32 (relative L2 error per tensor, worst over the outputs / parameters).
- SDPA: none of the three attentions falls back to PyTorch's unfused math
  path in half precision or fp32: a fused kernel accepts each of them,
  position-bias mask included.
- Training gradients (with ``LIGHTVIT_OFFICIAL``): ours and the official
  code's, fp32, each within 1e-3 relative L2 of float64 autograd through the
  plain attention formula on the GPU, and of each other.
"""
import os

import pytest
import torch
import torch.nn.functional as F
from conftest import load_tool

from lightvit_mm import LightViT
from lightvit_mm.analysis.official_reference import exact_fp32, reference_builders
from lightvit_mm.models.backbones import lightvit as lightvit_module

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
AMP_TOLERANCE = {  # relative L2 error against fp32: outputs, gradients
    torch.float16: (1e-2, 5e-2),
    torch.bfloat16: (5e-2, 1e-1),
}


def relative_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30))


@pytest.fixture
def no_tf32():
    with exact_fp32():
        yield


@pytest.mark.parametrize('case', ['det', 'det_even'])
def test_official_vectors_on_cuda(official_vectors, mini_arch, case, no_tf32):
    suffix = '_even' if case == 'det_even' else ''
    model = LightViT(arch=mini_arch, window_size=official_vectors['arch']['window_size'])
    model.load_state_dict(official_vectors['det_state_dict'], strict=True)
    model.cuda().eval()
    with torch.no_grad():
        outs = model(official_vectors[f'det_input{suffix}'].cuda())
    refs = official_vectors[f'det_outputs{suffix}']
    diff = max((o.cpu() - r).abs().max().item() for o, r in zip(outs, refs))
    print(f'\nofficial vectors ({case}) on CUDA, fp32: max abs difference {diff:.1e}')
    assert diff < 1e-4


@pytest.mark.skipif(not os.environ.get('LIGHTVIT_OFFICIAL'),
                    reason='LIGHTVIT_OFFICIAL (a clone of hunto/LightViT) not set')
@pytest.mark.parametrize('arch', ['tiny', 'small', 'base'])
@pytest.mark.parametrize('size', [(224, 224), (256, 320)])
def test_matches_official_code_on_cuda(arch, size, no_tf32):
    build_official = next(iter(reference_builders(
        os.environ['LIGHTVIT_OFFICIAL'], []).values()))
    torch.manual_seed(0)
    ours = LightViT(arch=arch, out_indices=(0, 1, 2))
    ours.init_weights()
    official = build_official(ours)
    x = torch.randn(2, 3, *size, device='cuda')
    with torch.no_grad():
        outs = ours.cuda().eval()(x)
        refs = official.cuda().eval()(x)
    diff = max((o - r).abs().max().item() for o, r in zip(outs, refs))
    print(f'\nLightViT-{arch} vs official code, CUDA fp32, {size}: max abs difference '
          f'{diff:.1e}')
    assert diff < 1e-4


@pytest.mark.skipif(not os.environ.get('LIGHTVIT_OFFICIAL'),
                    reason='LIGHTVIT_OFFICIAL (a clone of hunto/LightViT) not set')
def test_training_gradients_match_official_code_on_cuda(no_tf32):
    # One training step of LightViT-T (batch 8, 224x224, drop path off): our
    # fp32 gradients and the official code's, each against autograd through
    # the plain attention formula in float64 on the GPU, and against each other.
    gpu_check = load_tool('tools/analysis/gpu_check.py')
    results = gpu_check.training_gradients(torch.device('cuda'), 8, 224,
                                           os.environ['LIGHTVIT_OFFICIAL'])
    ref = results['float64 reference']['grads']
    worst = {}
    for name in ('ours', 'official code'):
        rows = gpu_check.compare_grads(results[name]['grads'], ref)
        worst[name] = max(rows, key=lambda r: r['worst_rel_l2'])
        print(f'\n{name}, CUDA fp32: worst parameter {worst[name]["worst"]}, relative L2 '
              f'{worst[name]["worst_rel_l2"]:.1e} to float64')
    ours, official = results['ours']['grads'], results['official code']['grads']
    assert ours.keys() == official.keys() == ref.keys()
    between = max(relative_l2(ours[n], official[n]) for n in ref)
    print(f'ours vs official code, CUDA fp32: worst relative L2 {between:.1e}')
    assert all(w['worst_rel_l2'] < gpu_check.FP32_TOLERANCE for w in worst.values())
    assert between < gpu_check.FP32_TOLERANCE


def _training_step(model, x, dtype=None):
    model.zero_grad()
    with torch.autocast('cuda', dtype=dtype or torch.float32, enabled=dtype is not None):
        outs = model(x)
    sum((o.float() * torch.linspace(-1, 1, o.numel(), device=x.device).view_as(o)).sum()
        for o in outs).backward()
    return [o.detach().float() for o in outs], {
        n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize('with_cp', [False, True])
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_amp_training_step_close_to_fp32(dtype, with_cp):
    torch.manual_seed(0)
    model = LightViT(arch='tiny', out_indices=(0, 1, 2), with_cp=with_cp)
    model.init_weights()
    model.cuda().train()
    for module in model.modules():  # the same network in both steps
        if hasattr(module, 'drop_prob'):
            module.drop_prob = 0.
    x = torch.randn(8, 3, 224, 224, device='cuda')
    ref_outs, ref_grads = _training_step(model, x)
    outs, grads = _training_step(model, x, dtype)
    assert grads.keys() == ref_grads.keys()
    assert all(torch.isfinite(t).all() for t in [*outs, *grads.values()])
    out_error = max(relative_l2(o, r) for o, r in zip(outs, ref_outs))
    grad_errors = {n: relative_l2(grads[n], ref_grads[n]) for n in ref_grads}
    worst = max(grad_errors, key=grad_errors.get)
    print(f'\n{dtype} autocast, with_cp={with_cp}: outputs {out_error:.1e}, gradients '
          f'{grad_errors[worst]:.1e} ({worst}; median '
          f'{sorted(grad_errors.values())[len(grad_errors) // 2]:.1e}) relative L2 to fp32')
    out_tolerance, grad_tolerance = AMP_TOLERANCE[dtype]
    assert out_error < out_tolerance and grad_errors[worst] < grad_tolerance


def _attention_calls(model, x, dtype):
    """(name, q, k, v, mask) of every ``F.scaled_dot_product_attention`` call
    of one inference forward under autocast ``dtype`` (None: fp32)."""
    calls = []

    def record(q, k, v, attn_mask=None, **kwargs):
        calls.append((q, k, v, attn_mask))
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, **kwargs)
    names = ['local window', 'global aggregation', 'global broadcast']
    original = lightvit_module.F
    lightvit_module.F = _FunctionalWith(record)
    try:
        with torch.inference_mode(), torch.autocast('cuda', dtype=dtype or torch.float32,
                                                    enabled=dtype is not None):
            model(x)
    finally:
        lightvit_module.F = original
    return [(names[i % 3], *call) for i, call in enumerate(calls)]


def _default_kernels(q, k, v, mask):
    """Names of the CUDA kernels of one default ``scaled_dot_product_attention``."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof, torch.inference_mode():
        F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        torch.cuda.synchronize()
    return sorted({e.name[:60] for e in prof.events() if e.device_type.name == 'CUDA'})


class _FunctionalWith:
    """``torch.nn.functional`` with ``scaled_dot_product_attention`` replaced."""

    def __init__(self, sdpa):
        self.scaled_dot_product_attention = sdpa

    def __getattr__(self, name):
        return getattr(F, name)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16, None])
@pytest.mark.parametrize('size', [(224, 224), (800, 1216)])
def test_attentions_run_on_fused_kernels(dtype, size):
    """Each stage-1 attention call, replayed under the same autocast with one
    fused backend allowed at a time, is accepted by at least one of them."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    model = LightViT(arch='tiny').cuda().eval()
    x = torch.randn(2, 3, *size, device='cuda')
    fused = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
             SDPBackend.CUDNN_ATTENTION]
    autocast = torch.autocast('cuda', dtype=dtype or torch.float32, enabled=dtype is not None)
    accepted = {}
    print(f'\nSDPA, autocast {dtype}, input {size}, stage 1:')
    for name, q, k, v, mask in _attention_calls(model, x, dtype)[:3]:
        accepted[name] = []
        for backend in fused:
            try:
                with sdpa_kernel([backend]), torch.inference_mode(), autocast:
                    F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
                accepted[name].append(backend.name)
            except RuntimeError:
                pass
        with autocast:
            kernels = _default_kernels(q, k, v, mask)
        masked = 'no mask' if mask is None else f'mask {tuple(mask.shape)} {mask.dtype}'
        print(f'  {name}: q {tuple(q.shape)} {q.dtype}, {masked}: fused backends '
              f'{accepted[name]}; by default runs {kernels}')
    assert all(accepted.values()), accepted

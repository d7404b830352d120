"""The window attention (lightvit_mm/models/utils/window_attention.py) and
the backbone's use of it.

- ``relative_position_index`` is the official index.
- ``WindowAttentionWithBias`` (the training path of the window attention):
  outputs and gradients of q, k, v and the position bias equal autograd's
  through the official formula ``softmax(q k^T * scale + bias) v``, with
  torch's private softmax backward and with its public fallback, and the
  whole backbone, trained with it, still reproduces the official outputs
  (v2 vectors, 1e-5) with gradients equal to those of the official formula
  (1e-4 relative).
- Inference takes torch's fused kernel instead.
"""
import pytest
import torch
import torch.nn.functional as F
from conftest import backbone_grads, load_official_backbone

from lightvit_mm import LightViT
from lightvit_mm.models.backbones import lightvit as lightvit_module
from lightvit_mm.models.utils import WindowAttentionWithBias, relative_position_index
from lightvit_mm.models.utils.window_attention import softmax_backward


def official_formula(q, k, v, bias):
    """Official LightViT ``Attention.forward_local``: explicit products."""
    attn = (q @ k.transpose(-2, -1)) * q.shape[-1]**-0.5
    return (attn + bias).softmax(dim=-1) @ v


def relative_error(a, b):
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize('softmax_kernel', ['private', 'public fallback'])
def test_window_attention_function_matches_autograd(softmax_kernel, monkeypatch):
    if softmax_kernel == 'public fallback':  # as on a torch without the private kernel
        monkeypatch.delattr(torch, '_softmax_backward_data')
    generator = torch.Generator().manual_seed(0)
    # q, k, v as strided views of one qkv tensor, as LightViTAttention passes them
    qkv = torch.randn(6, 49, 3, 2, 16, generator=generator, dtype=torch.float64)
    bias = torch.randn(1, 2, 49, 49, generator=generator, dtype=torch.float64)
    grad_out = torch.randn(6, 2, 49, 16, generator=generator, dtype=torch.float64)
    results = []
    for fn in (WindowAttentionWithBias.apply, official_formula):
        leaves = [qkv.clone().requires_grad_(), bias.clone().requires_grad_()]
        q, k, v = leaves[0].permute(2, 0, 3, 1, 4).unbind(0)
        out = fn(q, k, v, leaves[1])
        out.backward(grad_out)
        results.append([out] + [leaf.grad for leaf in leaves])
    for ours, reference in zip(*results):
        torch.testing.assert_close(ours, reference, rtol=1e-10, atol=1e-12)
    small = [torch.randn(2, 2, 5, 4, generator=generator, dtype=torch.float64,
                         requires_grad=True) for _ in range(3)]
    small_bias = torch.randn(1, 2, 5, 5, generator=generator, dtype=torch.float64,
                             requires_grad=True)
    assert torch.autograd.gradcheck(WindowAttentionWithBias.apply, small + [small_bias])


@pytest.mark.parametrize('dtype', [torch.float64, torch.bfloat16])
def test_softmax_backward_fallback_agrees_with_the_private_kernel(dtype, monkeypatch):
    """``softmax_backward``'s two branches: torch's private kernel and the
    public formula it falls back to give autograd's softmax gradient."""
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(6, 2, 49, 49, generator=generator, dtype=torch.float64)
    grad = torch.randn(6, 2, 49, 49, generator=generator, dtype=torch.float64)
    leaf = scores.clone().requires_grad_()
    leaf.softmax(-1).backward(grad)
    probs, grad = scores.softmax(-1).to(dtype), grad.to(dtype)
    private = softmax_backward(grad, probs)
    monkeypatch.delattr(torch, '_softmax_backward_data')
    public = softmax_backward(grad, probs)
    assert private.dtype == public.dtype == dtype
    tolerance = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(
        rtol=0, atol=2e-2 * float(leaf.grad.abs().max()))
    for ours in (private, public):
        torch.testing.assert_close(ours.double(), leaf.grad, **tolerance)


def test_window_attention_function_in_half_precision(monkeypatch):
    """As under CUDA autocast: q, k, v in half precision (the ``qkv`` Linear's
    output), the bias in float32 (the table), and autocast running the
    softmax in float32 (emulated here on the CPU, whose autocast leaves
    softmax alone). Forward and backward stay in q's dtype (a float32
    softmax output would leave the backward's matrix products with mixed
    operands), the bias gradient comes back in float32, and all agree with
    the float64 formula to bfloat16 precision."""
    softmax = torch.Tensor.softmax

    def softmax_as_cuda_autocast(self, dim):
        out = softmax(self, dim)
        return out.float() if torch.is_autocast_enabled('cpu') else out
    monkeypatch.setattr(torch.Tensor, 'softmax', softmax_as_cuda_autocast)
    generator = torch.Generator().manual_seed(0)
    qkv = torch.randn(64, 49, 3, 2, 16, generator=generator, dtype=torch.float64)
    bias = torch.randn(1, 2, 49, 49, generator=generator, dtype=torch.float64)
    grad_out = torch.randn(64, 2, 49, 16, generator=generator, dtype=torch.float64)
    results = []
    for fn, dtype in ((official_formula, torch.float64),
                      (WindowAttentionWithBias.apply, torch.bfloat16)):
        leaves = [qkv.to(dtype).detach().requires_grad_(), bias.float().requires_grad_()]
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            out = fn(*leaves[0].permute(2, 0, 3, 1, 4).unbind(0), leaves[1])
        out.backward(grad_out.to(out.dtype))
        results.append([out.detach()] + [leaf.grad for leaf in leaves])
    out, grad_qkv, grad_bias = results[1]
    assert (out.dtype, grad_qkv.dtype, grad_bias.dtype) == (
        torch.bfloat16, torch.bfloat16, torch.float32)
    for ours, reference in zip(results[1], results[0]):
        assert relative_error(ours.double(), reference.double()) < 2e-2


def official_index(window_size):
    """The official ``get_relative_position_index`` (hunto/LightViT
    ``detection/lightvit.py``), restated pair by pair: window positions
    p = (row, col) and q = (row2, col2) in row-major order index the bias
    table at ``(row - row2 + ws - 1) * (2 ws - 1) + (col - col2 + ws - 1)``."""
    ws = window_size
    cells = [(row, col) for row in range(ws) for col in range(ws)]
    return torch.tensor([[(row - row2 + ws - 1) * (2 * ws - 1) + (col - col2 + ws - 1)
                          for row2, col2 in cells] for row, col in cells])


@pytest.mark.parametrize('window_size', [1, 2, 3, 7])
def test_relative_position_index_matches_official(window_size, official_vectors_v2):
    ours = relative_position_index(window_size)
    assert ours.dtype == torch.long
    assert torch.equal(ours.view(window_size**2, -1), official_index(window_size))
    if window_size == 7:  # the buffers the official code saved
        saved = [v for k, v in official_vectors_v2['det_state_dict'].items()
                 if k.endswith('relative_position_index')]
        assert saved and all(torch.equal(ours.view_as(v), v) for v in saved)
        model = LightViT(arch='tiny', window_size=7)
        assert torch.equal(model.stages[0][0].attn.relative_position_index, ours)


def official_v2_model(reference, mini_arch, **kwargs):
    model = LightViT(arch=mini_arch, window_size=reference['arch']['window_size'], **kwargs)
    return load_official_backbone(model, reference['det_state_dict'])


def test_training_path_matches_official(official_vectors_v2, mini_arch, monkeypatch):
    model = official_v2_model(official_vectors_v2, mini_arch, drop_path_rate=0.)
    x = official_vectors_v2['det_input']  # needs window padding
    # With grad enabled the window attention takes the custom function; in eval
    # mode (BatchNorm statistics) the outputs are the official vectors.
    with torch.enable_grad():
        for out, ref in zip(model.eval()(x), official_vectors_v2['det_outputs']):
            assert out.requires_grad
            torch.testing.assert_close(out.detach(), ref, atol=1e-5, rtol=0)
    model.train()
    outs, grads = backbone_grads(model, x)
    # The same step with the official formula in place of the custom function.
    monkeypatch.setattr(lightvit_module.WindowAttentionWithBias, 'apply', official_formula)
    ref_outs, ref_grads = backbone_grads(model, x)
    for out, ref in zip(outs, ref_outs):
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    assert grads.keys() == ref_grads.keys()
    assert grads['stages.0.0.attn.relative_position_bias_table'].abs().sum() > 0
    errors = {n: relative_error(grads[n], ref_grads[n]) for n in grads}
    assert max(errors.values()) < 1e-4, sorted(errors.items(), key=lambda kv: -kv[1])[:3]


def test_sdpa_fallback_unused_for_inference():
    """Inference (no grad) calls torch's fused kernel with the bias as mask,
    once per block (the window attention: 49 x 49 masks at a 7x7 window); the
    custom function serves training only."""
    model = LightViT(arch='tiny').eval()
    calls = []
    original = F.scaled_dot_product_attention

    def counting(*args, **kwargs):
        mask = kwargs.get('attn_mask')
        calls.append(mask is not None and mask.dim() == 4 and mask.dtype == torch.float32
                     and tuple(mask.shape[-2:]) == (49, 49))
        return original(*args, **kwargs)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(lightvit_module.F, 'scaled_dot_product_attention', counting)
        with torch.no_grad():
            model(torch.randn(1, 3, 56, 56))
    assert sum(calls) == 14  # one window attention per block, with the bias



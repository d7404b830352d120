# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""Window attention with a learned relative position bias (Swin, Liu et al.
2021; LightViT's local attention, paper Sec. 3.2): the bias index, the
training-time attention as an autograd Function, and its softmax backward."""
import torch


def relative_position_index(window_size: int) -> torch.Tensor:
    """Index into a ((2*ws-1)^2, heads) bias table for every pair of window
    positions, flattened to shape (ws^4,), as in Swin (Liu et al. 2021)."""
    coords = torch.stack(torch.meshgrid(
        torch.arange(window_size), torch.arange(window_size), indexing='ij')).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]) + (window_size - 1)
    return (rel[0] * (2 * window_size - 1) + rel[1]).flatten()


def softmax_backward(grad_out: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """Gradient through ``probs = softmax(s, -1)``: ``probs * (grad_out -
    rowsum(grad_out * probs))``, from the saved probabilities alone.

    torch's own kernel (the private ``torch._softmax_backward_data``, what
    autograd's softmax uses) where this torch has it, else the same formula
    in public operations (one (..., L, L) temporary more).

    Shapes:
        grad_out, probs: (..., L); output: the same, dtype of ``probs``.
    """
    kernel = getattr(torch, '_softmax_backward_data', None)
    if kernel is not None:
        return kernel(grad_out, probs, -1, probs.dtype)
    return probs * (grad_out - (grad_out * probs).sum(-1, keepdim=True))


class WindowAttentionWithBias(torch.autograd.Function):
    """``softmax(q k^T / sqrt(d) + bias) v`` for training, with the gradient of
    the additive ``bias`` (LightViT's learned relative position bias).

    Same result as ``F.scaled_dot_product_attention(q, k, v, attn_mask=bias)``
    to float rounding. Where ``bias`` needs a gradient, torch's CPU kernel
    falls back to a composite of about ten autograd nodes that keeps several
    (..., L, L) tensors for backward; here the forward keeps only the
    softmax probabilities P (besides q, k, v, which are views of the ``qkv``
    output kept anyway), and the backward is the textbook one: dV = P^T dO,
    dS = P * (dO V^T - rowsum(P * dO V^T)), dQ = dS K / sqrt(d),
    dK = dS^T Q / sqrt(d), dbias = dS summed over the broadcast dimensions.

    Mixed precision: everything is computed in the dtype of ``q`` (half
    precision under ``torch.autocast``; the softmax accumulates in float32
    inside torch's kernel), with autocast off inside, so forward and backward
    see the same dtypes; CUDA autocast would otherwise run the softmax in
    float32 and leave the backward's matrix products with mixed operands.
    ``bias`` (the float32 table) is cast to that dtype, and its gradient is
    summed in float32 (at least) and returned in ``bias``'s dtype.

    Shapes:
        q, k: (N, heads, L, d); v: (N, heads, L, dv); bias: (1, heads, L, L);
        output: (N, heads, L, dv), dtype of ``q``.
    """

    @staticmethod
    def forward(ctx, q, k, v, bias):
        ctx.bias_dtype = bias.dtype
        with torch.autocast(q.device.type, enabled=False):
            scale = q.shape[-1]**-0.5
            attn = torch.matmul(q, k.transpose(-2, -1)).mul_(scale)
            attn = attn.add_(bias.to(q.dtype)).softmax(-1)
            ctx.save_for_backward(q, k, v, attn)
            return torch.matmul(attn, v)

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, attn = ctx.saved_tensors
        scale = q.shape[-1]**-0.5
        grad_out = grad_out.to(attn.dtype)
        grad_v = torch.matmul(attn.transpose(-2, -1), grad_out)
        grad_attn = torch.matmul(grad_out, v.transpose(-2, -1))
        grad_s = softmax_backward(grad_attn, attn)
        grad_q = torch.matmul(grad_s, k).mul_(scale)
        grad_k = torch.matmul(grad_s.transpose(-2, -1), q).mul_(scale)
        grad_bias = None
        if ctx.needs_input_grad[3]:
            total = torch.promote_types(grad_s.dtype, torch.float32)  # half: sum in float32
            grad_bias = grad_s.sum(0, keepdim=True, dtype=total).to(ctx.bias_dtype)
        return grad_q, grad_k, grad_v, grad_bias

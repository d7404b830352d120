import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import load_tool

from lightvit_mm.analysis.complexity import count_complexity


@pytest.fixture(scope='module')
def get_flops_tool():
    """tools/analysis/get_flops.py, imported as a module."""
    return load_tool('tools/analysis/get_flops.py')


class TwoAttentions(nn.Module):
    """SDPA with different query/key lengths and a broadcast mask."""

    def forward(self, q, k, v):
        mask = torch.zeros(q.shape[-2], k.shape[-2])
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask) + \
            F.scaled_dot_product_attention(q, k, v)


def test_sdpa_handle_counts_both_products():
    B, heads, nq, nk, d = 2, 3, 5, 7, 4
    q, k, v = torch.rand(B, heads, nq, d), torch.rand(B, heads, nk, d), torch.rand(B, heads, nk, d)
    with_attn = count_complexity(TwoAttentions(), (q, k, v))
    without = count_complexity(TwoAttentions(), (q, k, v), attention=False)
    per_call = 2 * B * heads * nq * nk * d  # Q K^T and A V, multiply-adds
    assert with_attn['flops'] == with_attn['attention_flops'] == 2 * per_call
    assert without['flops'] == 0 and without['attention_flops'] == 2 * per_call
    assert 'aten::scaled_dot_product_attention' not in with_attn['unsupported_ops']


def test_lightvit_tiny_classifier_complexity(get_flops_tool):
    """The tool's LightViT-T classifier row: the official 9.38M parameters, and
    the attention products counted (nonzero) unless --no-attention-flops."""
    config = 'configs/mmpretrain/lightvit-tiny_8xb128_in1k.py'
    stats, _ = get_flops_tool.count_row('classifier', 'T', config, (224, 224), True)
    # count_complexity(attention=False) reports flops - attention_flops from
    # the same trace (checked on a plain module above).
    without = stats['flops'] - stats['attention_flops']
    assert abs(stats['params'] / 1e6 - 9.38) <= 0.01
    assert stats['attention_flops'] > 0
    assert stats['flops'] > without
    # PAPER.md: mmengine counts 0.78G for the official LightViT-T (explicit
    # matmuls there, SDPA here).
    assert round(stats['flops'] / 1e9, 2) == 0.78

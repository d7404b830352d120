import json
import os.path as osp

import pytest
import torch
from conftest import DATA, load_official_backbone
from torch.nn.modules.batchnorm import _BatchNorm

from lightvit_mm.models import LightViT

WIDTHS = {'tiny': [64, 128, 256], 'small': [96, 192, 384], 'base': [128, 256, 512]}


def ceil_div(x, n):
    return -(-x // n)


def expected_sizes(h, w):
    # stem: three stride-2 convs with padding 1, then ceil(/2) per merging.
    h, w = ceil_div(ceil_div(ceil_div(h, 2), 2), 2), ceil_div(ceil_div(ceil_div(w, 2), 2), 2)
    sizes = [(h, w)]
    for _ in range(2):
        h, w = ceil_div(h, 2), ceil_div(w, 2)
        sizes.append((h, w))
    return sizes


@pytest.mark.parametrize('arch', ['tiny', 'small', 'base'])
@pytest.mark.parametrize('shape', [(1, 3, 200, 264), (2, 3, 97, 131), (1, 3, 33, 47),
                                   (1, 3, 224, 224)])
def test_output_shapes(arch, shape):
    model = LightViT(arch=arch).eval()
    with torch.no_grad():
        outs = model(torch.rand(shape))
    assert isinstance(outs, tuple) and len(outs) == 3
    for out, dims, (h, w) in zip(outs, WIDTHS[arch], expected_sizes(*shape[2:])):
        assert out.shape == (shape[0], dims, h, w)
        assert out.is_contiguous()
        assert torch.isfinite(out).all()


def test_arch_aliases_and_dict():
    for short, full in [('t', 'tiny'), ('s', 'small'), ('b', 'base')]:
        assert LightViT(arch=short).arch_settings == LightViT(arch=full).arch_settings
    custom = dict(embed_dims=[32, 64], depths=[1, 1], num_heads=[1, 2], mlp_ratios=[2, 2],
                  num_tokens=2)
    outs = LightViT(arch=custom, out_indices=(0, 1)).eval()(torch.rand(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [32, 64]


def test_bad_arch():
    with pytest.raises(KeyError, match=r"Unknown LightViT arch 'huge'.*'tiny'"):
        LightViT(arch='huge')
    with pytest.raises(ValueError, match=r"missing \['num_tokens'\]"):
        LightViT(arch=dict(embed_dims=[64], depths=[1], num_heads=[2], mlp_ratios=[4]))
    with pytest.raises(ValueError, match='one value per stage'):
        LightViT(arch=dict(embed_dims=[64, 128], depths=[1], num_heads=[2, 4],
                           mlp_ratios=[4, 4], num_tokens=4))
    with pytest.raises(ValueError, match='num_heads 3 does not divide embed_dims 64'):
        LightViT(arch=dict(embed_dims=[64], depths=[1], num_heads=[3], mlp_ratios=[4],
                           num_tokens=4))
    with pytest.raises(TypeError, match='str or a dict'):
        LightViT(arch=3)


def test_out_indices():
    model = LightViT(out_indices=-1).eval()
    assert model.out_indices == (2,)
    assert not hasattr(model, 'norm0') and hasattr(model, 'norm2')
    outs = model(torch.rand(1, 3, 64, 64))
    assert len(outs) == 1 and outs[0].shape[1] == 256
    indices = [0, 2]
    assert LightViT(out_indices=indices).out_indices == (0, 2)
    assert indices == [0, 2]  # the argument is not modified
    with pytest.raises(ValueError, match=r'Invalid out_indices \(0, 3\).*\[-3, 2\]'):
        LightViT(out_indices=(0, 3))
    with pytest.raises(ValueError, match='name a stage twice'):
        LightViT(out_indices=(1, -2))
    with pytest.raises(TypeError, match='non-empty sequence'):
        LightViT(out_indices=())


def test_bad_input():
    model = LightViT().eval()
    with pytest.raises(ValueError, match=r'\(B, 3, H, W\), got \(3, 64, 64\)'):
        model(torch.rand(3, 64, 64))
    with pytest.raises(ValueError, match=r'\(B, 3, H, W\), got \(1, 1, 64, 64\)'):
        model(torch.rand(1, 1, 64, 64))
    with pytest.raises(ValueError, match=r'at least 8x8 pixels .*got 7x64'):
        model(torch.rand(1, 3, 7, 64))
    assert model(torch.rand(1, 3, 8, 8))[2].shape == (1, 256, 1, 1)


@pytest.mark.parametrize('frozen_stages', [0, 1, 3])
def test_frozen_stages(frozen_stages):
    model = LightViT(frozen_stages=frozen_stages)
    model.train()
    assert model.patch_embed.training is False
    assert not model.global_token.requires_grad
    assert all(not p.requires_grad for p in model.patch_embed.parameters())
    for i, stage in enumerate(model.stages):
        frozen = i < frozen_stages
        assert all(p.requires_grad != frozen for p in stage.parameters())
        assert all(m.training != frozen for m in stage.modules())
        assert all(p.requires_grad != frozen for p in getattr(model, f'norm{i}').parameters())
    # Frozen parameters get no gradient in a training step.
    if frozen_stages < 3:
        sum(o.sum() for o in model(torch.rand(2, 3, 64, 64))).backward()
        assert model.patch_embed.proj.weight.grad is None
        assert model.stages[-1][-1].mlp.fc1.weight.grad is not None
    else:
        assert not any(p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match=r'frozen_stages must be in \[-1, 3\]'):
        LightViT(frozen_stages=4)


def test_norm_eval_keeps_stem_statistics():
    model = LightViT(norm_eval=True).train()
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    assert len(bns) == 4 and all(not bn.training for bn in bns)
    before = [bn.running_mean.clone() for bn in bns]
    model(torch.rand(2, 3, 64, 64))
    assert all(torch.equal(b, bn.running_mean) for b, bn in zip(before, bns))
    model = LightViT(norm_eval=False).train()
    assert all(m.training for m in model.modules() if isinstance(m, _BatchNorm))


def test_drop_path_schedule():
    model = LightViT(arch='tiny', drop_path_rate=0.3)
    rates = [block.drop_prob for stage in model.stages
             for block in stage if hasattr(block, 'drop_prob')]
    assert len(rates) == 14
    assert rates[0] == 0 and rates[-1] == pytest.approx(0.3)
    assert rates == sorted(rates)


def test_with_cp_same_outputs_and_grads():
    torch.manual_seed(0)
    model = LightViT(drop_path_rate=0.)
    model_cp = LightViT(drop_path_rate=0., with_cp=True)
    model_cp.load_state_dict(model.state_dict())
    x = torch.rand(1, 3, 64, 64, requires_grad=True)
    outs, outs_cp = model(x), model_cp(x)
    for a, b in zip(outs, outs_cp):
        torch.testing.assert_close(a, b)
    sum(o.sum() for o in outs).backward()
    sum(o.sum() for o in outs_cp).backward()
    torch.testing.assert_close(model.stages[1][2].attn.qkv.weight.grad,
                               model_cp.stages[1][2].attn.qkv.weight.grad)


@pytest.mark.parametrize('arch', ['tiny', 'small', 'base'])
def test_parameter_names_match_official(arch):
    with open(osp.join(DATA, 'official_state_dict_shapes.json')) as f:
        reference = json.load(f)
    ours = {k: list(v.shape) for k, v in LightViT(arch=arch).state_dict().items()}
    detection = reference[f'detection_backbone/{arch}']
    if arch == 'tiny':  # the official detection tiny has 512 global tokens
        detection = dict(detection, global_token=[1, 8, 64])
    assert ours == detection
    classification = {k: v for k, v in reference[f'classification/{arch}'].items()
                      if k.split('.')[0] not in ('norm', 'neck', 'head')}
    assert {k: v for k, v in ours.items() if not k.startswith('norm')} == classification


@pytest.mark.parametrize('case', ['det', 'det_even'])
def test_matches_official_outputs(official_vectors, mini_arch, case):
    suffix = '_even' if case == 'det_even' else ''
    model = LightViT(arch=mini_arch, window_size=official_vectors['arch']['window_size'])
    model.load_state_dict(official_vectors['det_state_dict'], strict=True)
    model.eval()
    with torch.no_grad():
        outs = model(official_vectors[f'det_input{suffix}'])
    refs = official_vectors[f'det_outputs{suffix}']
    assert len(outs) == len(refs) == 3
    for out, ref in zip(outs, refs):
        assert out.shape == ref.shape
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize('case', ['det', 'det_even'])
def test_matches_official_outputs_at_trained_scale(official_vectors_v2, mini_arch, case):
    """The v2 vectors: every weight at a trained-like scale, our own
    relative-position index (not the official buffer); 200x264 needs window
    padding and odd-size patch merging, 224x224 neither."""
    suffix = '_even' if case == 'det_even' else ''
    ref = official_vectors_v2
    model = LightViT(arch=mini_arch, window_size=ref['arch']['window_size'])
    load_official_backbone(model, ref['det_state_dict']).eval()
    with torch.no_grad():
        outs = model(ref[f'det_input{suffix}'])
    assert len(outs) == len(ref[f'det_outputs{suffix}']) == 3
    for out, expected in zip(outs, ref[f'det_outputs{suffix}']):
        assert out.shape == expected.shape
        assert expected.abs().max() > 1  # far from init scale (v1: about 1)
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


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
    from lightvit_mm.models.utils import relative_position_index
    ours = relative_position_index(window_size)
    assert ours.dtype == torch.long
    assert torch.equal(ours.view(window_size**2, -1), official_index(window_size))
    if window_size == 7:  # the buffers the official code saved
        saved = [v for k, v in official_vectors_v2['det_state_dict'].items()
                 if k.endswith('relative_position_index')]
        assert saved and all(torch.equal(ours.view_as(v), v) for v in saved)
        model = LightViT(arch='tiny', window_size=7)
        assert torch.equal(model.stages[0][0].attn.relative_position_index, ours)


@pytest.mark.parametrize('as_list', [False, True])
def test_pretrained_init_cfg_loads_every_parameter(tmp_path, as_list):
    source = LightViT(arch='tiny')
    source.init_weights()
    path = str(tmp_path / 'backbone.pth')
    torch.save(source.state_dict(), path)
    init_cfg = dict(type='Pretrained', checkpoint=path)
    model = LightViT(arch='tiny', init_cfg=[init_cfg] if as_list else init_cfg)
    model.init_weights()
    for name, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name


def test_default_init():
    model = LightViT(arch='tiny')
    model.init_weights()
    assert model.global_token.std().item() == pytest.approx(0.02, rel=0.3)
    table = model.stages[0][0].attn.relative_position_bias_table
    assert table.abs().max() > 0 and table.std().item() == pytest.approx(0.02, rel=0.3)
    assert torch.equal(model.norm0.weight, torch.ones(64))


def test_raw_tokens_keep_global_tokens():
    model = LightViT(arch='tiny', out_type='raw', out_indices=(0, 2)).eval()
    assert not any(name.startswith('norm') for name, _ in model.named_children())
    outs = model(torch.rand(2, 3, 100, 70))
    # 100x70 -> 13x9 tokens at stride 8, 4x3 at stride 32, plus 8 global tokens.
    assert [tuple(o.shape) for o in outs] == [(2, 8 + 13 * 9, 64), (2, 8 + 4 * 3, 256)]
    with pytest.raises(ValueError, match="out_type must be 'featmap' or 'raw'"):
        LightViT(out_type='tokens')

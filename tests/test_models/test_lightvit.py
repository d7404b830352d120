"""The LightViT backbone (lightvit_mm/models/backbones/lightvit.py): shapes,
arguments and their errors, the official parameter names and outputs,
initialisation, stochastic depth, and deploy mode (``switch_to_deploy``:
folded stem BatchNorms and a fixed position bias give the eval model's
outputs within 1e-4, at sizes with and without window padding, and the
official v2 outputs within 2e-5; ``deploy=True`` builds that structure; the
deployed model refuses training and compiles in one graph).

Bad input: each case asserts that the message names what was wrong and,
where the message has it, what is accepted; ``pytest -s`` prints them.
"""
import json
import os.path as osp

import pytest
import torch
import torch._dynamo
from conftest import (
    DATA,
    MINI,
    REPO,
    ErrorCases,
    build_model,
    load_official_backbone,
    load_tool,
)
from mmengine.config import Config
from torch.nn.modules.batchnorm import _BatchNorm

from lightvit_mm.models import LightViT

WIDTHS = {'tiny': [64, 128, 256], 'small': [96, 192, 384], 'base': [128, 256, 512]}
CASES = ErrorCases()


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


def test_out_indices():
    model = LightViT(out_indices=-1).eval()
    assert model.out_indices == (2,)
    assert not hasattr(model, 'norm0') and hasattr(model, 'norm2')
    outs = model(torch.rand(1, 3, 64, 64))
    assert len(outs) == 1 and outs[0].shape[1] == 256
    indices = [0, 2]
    assert LightViT(out_indices=indices).out_indices == (0, 2)
    assert indices == [0, 2]  # the argument is not modified


def test_smallest_input_is_8x8():
    model = LightViT().eval()  # below 8x8: see 'image smaller than 8x8'
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


def _randomise_batchnorms(model):
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator))
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.data.copy_(torch.randn(n, generator=generator))
            module.bias.data.copy_(torch.randn(n, generator=generator))


@pytest.mark.parametrize('case', ['', '_even'])
def test_deploy_mode_matches_official(official_vectors_v2, mini_arch, case):
    """The deployed model (folded stem BatchNorms, fixed position bias built
    from our own index) reproduces the official v2 outputs."""
    model = LightViT(arch=mini_arch, window_size=official_vectors_v2['arch']['window_size'])
    load_official_backbone(model, official_vectors_v2['det_state_dict']).eval()
    model.switch_to_deploy()
    with torch.no_grad():
        outs = model(official_vectors_v2[f'det_input{case}'])
    for out, ref in zip(outs, official_vectors_v2[f'det_outputs{case}']):
        torch.testing.assert_close(out, ref, atol=2e-5, rtol=0)


@pytest.mark.parametrize('out_type', ['featmap', 'raw'])
def test_deploy_mode_keeps_outputs(out_type):
    torch.manual_seed(0)
    model = LightViT(arch='tiny', out_type=out_type)
    model.init_weights()
    _randomise_batchnorms(model)
    model.eval()
    inputs = [torch.randn(2, 3, 224, 224), torch.randn(1, 3, 97, 131)]  # 97x131: padding
    with torch.no_grad():
        expected = [model(x) for x in inputs]
        model.switch_to_deploy()
        model.switch_to_deploy()  # a second call changes nothing
        got = [model(x) for x in inputs]
    for outs, refs in zip(got, expected):
        for out, ref in zip(outs, refs):
            assert out.shape == ref.shape
            torch.testing.assert_close(out, ref, atol=1e-4, rtol=0)
    keys = model.state_dict().keys()
    assert not any('running_mean' in k or 'relative_position' in k for k in keys)
    assert {'stem.0.bias', 'stem.3.bias', 'stem.6.bias', 'stem.9.bias'} <= {
        k.replace('patch_embed.', '') for k in keys}
    assert 'stages.1.1.attn.position_bias' in keys
    with pytest.raises(RuntimeError, match='deploy mode'):
        model.train()


def switched_model(**kwargs):
    """A LightViT-T (random weights and BatchNorm statistics) after switch_to_deploy."""
    torch.manual_seed(0)
    model = LightViT(arch='tiny', **kwargs)
    model.init_weights()
    _randomise_batchnorms(model)
    model.eval().switch_to_deploy()
    return model


@pytest.mark.parametrize('out_type', ['featmap', 'raw'])
def test_deployed_state_dict_loads_strictly_into_deploy_true(out_type):
    """``LightViT(deploy=True)`` builds the switched structure (mmpretrain's
    RepVGG way): same keys and shapes, a strict load, the same outputs."""
    switched = switched_model(out_type=out_type)
    model = LightViT(arch='tiny', out_type=out_type, deploy=True, with_cp=True)
    assert model.deploy and not model.training
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert not any(m.with_cp for m in model.modules() if hasattr(m, 'with_cp'))
    assert {k: v.shape for k, v in model.state_dict().items()} == {
        k: v.shape for k, v in switched.state_dict().items()}
    model.load_state_dict(switched.state_dict(), strict=True)
    with torch.no_grad():
        for x in (torch.randn(2, 3, 224, 224), torch.randn(1, 3, 97, 131)):
            for out, ref in zip(model(x), switched(x)):
                assert torch.equal(out, ref)
    with pytest.raises(RuntimeError, match='deploy mode'):
        model.train()


def test_reparameterize_tool_and_deploy_config(tmp_path):
    """tools/model_converters/reparameterize_model.py turns a checkpoint of
    the digits detector into one that loads strictly into the deploy config
    and gives the same features."""
    config = osp.join(REPO, 'configs/mmdet/digits/mask-rcnn_lightvit-t_lightvit-fpn_digits.py')
    deploy_config = config.replace('lightvit-t_', 'lightvit-t-deploy_')
    torch.manual_seed(0)
    model = build_model(Config.fromfile(config))
    model.init_weights()
    _randomise_batchnorms(model)
    src, dst = str(tmp_path / 'trained.pth'), str(tmp_path / 'deploy.pth')
    classes = tuple(str(i) for i in range(10))
    torch.save({'state_dict': model.state_dict(), 'meta': {'dataset_meta': {'classes': classes},
                                                           'epoch': 1}}, src)
    tool = load_tool('tools/model_converters/reparameterize_model.py')
    tool.main([config, src, dst])
    checkpoint = torch.load(dst, weights_only=True)
    assert checkpoint['meta']['dataset_meta'] == {'classes': classes}
    deployed = build_model(Config.fromfile(deploy_config))
    assert deployed.backbone.deploy
    deployed.load_state_dict(checkpoint['state_dict'], strict=True)
    x = torch.randn(1, 3, 128, 96)
    with torch.no_grad():
        for out, ref in zip(deployed.eval().extract_feat(x), model.eval().extract_feat(x)):
            torch.testing.assert_close(out, ref, atol=1e-4, rtol=0)
    with pytest.raises(SystemExit):
        tool.main([config, src, dst])  # exists: needs --force


def test_deploy_mode_compiles_in_one_graph():
    torch._dynamo.reset()
    model = LightViT(arch='tiny')
    model.switch_to_deploy()
    with torch.no_grad():
        report = torch._dynamo.explain(model)(torch.randn(1, 3, 100, 132))
    assert (report.graph_count, report.graph_break_count) == (1, 0), report.break_reasons


def test_fused_drop_path_residual_matches_mmcv_drop_path():
    from mmcv.cnn.bricks import DropPath
    block = LightViT(arch='tiny', drop_path_rate=0.5).stages[2][6].train()
    assert block.drop_prob == 0.5  # the last block
    x, y = torch.randn(16, 9, 256), torch.randn(16, 9, 256)
    torch.manual_seed(3)
    fused = block._residual(x, y)
    torch.manual_seed(3)
    reference = x + DropPath(0.5).train()(y)
    torch.testing.assert_close(fused, reference)
    kept = (fused - x).flatten(1).abs().amax(1) > 0
    assert 0 < kept.sum() < 16  # some samples dropped, some kept (seed 3)
    torch.testing.assert_close(block.eval()._residual(x, y), x + y)


# --- architecture -----------------------------------------------------------
@CASES('unknown arch name', KeyError,
      r"Unknown LightViT arch 'huge'",
      r"accepted: \['b', 'base', 's', 'small', 't', 'tiny'\] or a dict with keys "
      r"\['embed_dims', 'depths', 'num_heads', 'mlp_ratios', 'num_tokens'\]")
def _(tmp_path):
    LightViT(arch='huge')


@CASES('arch of another type', TypeError, r'arch must be a str or a dict, got int')
def _(tmp_path):
    LightViT(arch=3)


@CASES('arch dict missing a key', ValueError,
      r"arch dict is missing \['num_tokens'\]",
      r"needs all of \['embed_dims', 'depths', 'num_heads', 'mlp_ratios', 'num_tokens'\]")
def _(tmp_path):
    LightViT(arch={k: v for k, v in MINI.items() if k != 'num_tokens'})


@CASES('arch lists of different lengths', ValueError,
      r'must have one value per stage',
      r"'embed_dims': 3, 'depths': 2")
def _(tmp_path):
    LightViT(arch=dict(MINI, depths=[1, 1]))


@CASES('num_heads not dividing a width', ValueError,
      r'num_heads 3 does not divide embed_dims 16')
def _(tmp_path):
    LightViT(arch=dict(MINI, num_heads=[3, 2, 4]))


# --- other constructor arguments --------------------------------------------
@CASES('out_indices out of range', ValueError,
      r'Invalid out_indices \(0, 3\)', r'each must be an int in \[-3, 2\]')
def _(tmp_path):
    LightViT(arch=MINI, out_indices=(0, 3))


@CASES('out_indices naming a stage twice', ValueError,
      r'out_indices \(0, -3\) name a stage twice')
def _(tmp_path):
    LightViT(arch=MINI, out_indices=(0, -3))  # -3 is stage 0


@CASES('out_indices empty', TypeError,
      r'out_indices must be an int or a non-empty sequence of ints, got \(\)')
def _(tmp_path):
    LightViT(arch=MINI, out_indices=())


@CASES('frozen_stages out of range', ValueError,
      r'frozen_stages must be in \[-1, 3\]', r'-1: none, 0: stem, k: stem \+ first k stages',
      r'got 4')
def _(tmp_path):
    LightViT(arch=MINI, frozen_stages=4)


@CASES('out_type unknown', ValueError, r"out_type must be 'featmap' or 'raw', got 'tokens'")
def _(tmp_path):
    LightViT(arch=MINI, out_type='tokens')


@CASES('misspelled backbone argument in a config', TypeError,
      r"LightViT.__init__\(\) got an unexpected keyword argument 'out_indice'")
def _(tmp_path):
    from mmengine.config import Config
    cfg = Config.fromfile(
        osp.join(REPO, 'configs/mmdet/mask-rcnn_lightvit-t_lightvit-fpn_1x_coco.py'))
    cfg.model.backbone.init_cfg = None
    cfg.model.backbone.pop('out_indices')
    cfg.model.backbone.out_indice = (0, 1, 2)
    build_model(cfg)


# --- inputs -------------------------------------------------------------------
@CASES('input not 4-D', ValueError,
      r'expects images of shape \(B, 3, H, W\), got \(3, 64, 64\)')
def _(tmp_path):
    LightViT(arch=MINI)(torch.rand(3, 64, 64))


@CASES('wrong channel count', ValueError,
      r'expects images of shape \(B, 3, H, W\), got \(2, 1, 64, 64\)')
def _(tmp_path):
    LightViT(arch=MINI)(torch.rand(2, 1, 64, 64))


@CASES('image smaller than 8x8', ValueError,
      r'needs images of at least 8x8 pixels', r'got 5x40')
def _(tmp_path):
    LightViT(arch=MINI)(torch.rand(1, 3, 5, 40))


@pytest.mark.parametrize('name', list(CASES))
def test_bad_input_gives_clear_error(name, tmp_path):
    CASES.check(name, tmp_path)


# --- NaN / Inf -------------------------------------------------------------------
# mmengine does not stop on a non-finite loss by default (docs/robustness.md
# names the opt-in: clip_grad's error_if_nonfinite). What is LightViT's own:
# a non-finite pixel reaches every token of its image through the global
# tokens (global aggregation attends to the whole image), and no other image
# of the batch.
@pytest.mark.parametrize('value', [float('nan'), float('inf')])
def test_non_finite_pixel_spreads_over_its_image_only(value):
    torch.manual_seed(0)
    model = LightViT(arch=MINI).eval()
    model.init_weights()
    x = torch.rand(2, 3, 64, 96)
    x[0, :, 5, 90] = value  # one pixel, in one window of stage 0
    with torch.no_grad():
        outs = model(x)
    for out in outs:
        assert torch.isnan(out[0]).all()
        assert torch.isfinite(out[1]).all()

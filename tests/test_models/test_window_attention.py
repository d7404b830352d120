"""Speed paths of the backbone give the same numbers as the plain ones.

- ``WindowAttentionWithBias`` (the training path of the window attention):
  outputs and gradients of q, k, v and the position bias equal autograd's
  through the official formula ``softmax(q k^T * scale + bias) v``, and the
  whole backbone, trained with it, still reproduces the official outputs
  (v2 vectors, 1e-5) with gradients equal to those of the official formula
  (1e-4 relative).
- ``LightViT.switch_to_deploy``: folded stem BatchNorms and a fixed position
  bias give the eval model's outputs within 1e-4, at sizes with and without
  window padding, and the official v2 outputs within 2e-5; the deployed
  model refuses training and compiles in one graph.
"""
import os.path as osp

import pytest
import torch
import torch._dynamo
import torch.nn.functional as F
from conftest import backbone_grads, load_official_backbone

from lightvit_mm import LightViT
from lightvit_mm.models.backbones import lightvit as lightvit_module
from lightvit_mm.models.utils import WindowAttentionWithBias
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
    model = official_v2_model(official_vectors_v2, mini_arch).eval()
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
    from conftest import REPO, build_model, load_tool
    from mmengine.config import Config
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


def test_deploy_mode_compiles_in_one_graph():def test_deploy_mode_compiles_in_one_graph():
    torch._dynamo.reset()
    model = LightViT(arch='tiny')
    model.switch_to_deploy()
    with torch.no_grad():
        report = torch._dynamo.explain(model)(torch.randn(1, 3, 100, 132))
    assert (report.graph_count, report.graph_break_count) == (1, 0), report.break_reasons


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

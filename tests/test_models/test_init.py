"""Initialisation equal to the official code's, parameter group by parameter
group: LightViT backbone, LightViTFPN, LightViTClsNeck + LinearClsHead.

The official models are not importable here (mmdet 2.x / timm code), so their
init is written down analytically, each group with its source:
- classification model, github.com/hunto/image_classification_sota@36539b6
  ``lib/models/lightvit.py`` ("L:n"); it is what trains from scratch (the
  detection backbone loads these weights, and its T tokens are zeros, see
  tests/test_models/test_official_weights.py and the tok512 config);
- neck, github.com/hunto/LightViT ``detection/lightvit_fpn.py`` ("F:n") on
  mmcv 1.x ``ConvModule`` (Kaiming fan_out normal, bias 0) and ``xavier_init``
  (gain 1, bias 0).
A tensor is checked against its distribution by its bounds, mean and std.
"""
import math

import pytest
import torch
import torch.nn as nn

from lightvit_mm.models import LightViT, LightViTClsNeck, LightViTFPN

# timm's (official) and mmengine's trunc_normal_(std=.02) cut at +-2 absolute: a
# normal, except that their inverse-CDF sampling maps a uniform draw of exactly
# -1 or 1 to -inf/inf, clamped to -2/2 (a few tensors in a LightViT-B have one).
TRUNC_02 = ('trunc_normal', 0.02)


def fan_in(module):
    return module.weight[0].numel()


def fan_out(module):  # torch's: weight.size(0) x receptive field (in x k x k if transposed)
    return module.weight.shape[0] * module.weight[0, 0].numel()


def kaiming_uniform_sqrt5(module):  # torch's default conv init: U(+-1/sqrt(fan_in)), bias too
    return ('uniform', 1 / math.sqrt(fan_in(module)))


#: official init per group: (module type, parameter) -> distribution, source
OFFICIAL_BACKBONE = {
    (nn.Linear, 'weight'): (TRUNC_02, 'L:480 (_init_vit_weights, applied at L:374)'),
    (nn.Linear, 'bias'): (('const', 0.), 'L:481-482'),
    (nn.LayerNorm, 'weight'): (('const', 1.), 'L:488-490'),
    (nn.LayerNorm, 'bias'): (('const', 0.), 'L:488-490'),
    (nn.BatchNorm2d, 'weight'): (('const', 1.), 'L:488-490'),
    (nn.BatchNorm2d, 'bias'): (('const', 0.), 'L:488-490'),
    # "conv was left to pytorch default" (L:484): kaiming_uniform_(a=sqrt(5))
    (nn.Conv2d, 'weight'): (kaiming_uniform_sqrt5, 'L:484, torch Conv2d.reset_parameters'),
    (nn.Conv2d, 'bias'): (kaiming_uniform_sqrt5, 'L:484, torch Conv2d.reset_parameters'),
    'global_token': (TRUNC_02, 'L:373'),
    'relative_position_bias_table': (TRUNC_02, 'L:166'),
}
OFFICIAL_FPN = {
    (nn.Conv2d, 'weight'): (
        lambda m: ('uniform', math.sqrt(6 / (fan_in(m) + fan_out(m)))),
        'F:192-196 xavier_init(distribution=uniform)'),
    (nn.Conv2d, 'bias'): (('const', 0.), 'F:192-196 xavier_init(bias=0)'),
    (nn.ConvTranspose2d, 'weight'): (
        lambda m: ('normal', math.sqrt(2 / fan_out(m))),
        'F:291 TransposedConvModule -> ConvModule.init_weights: kaiming_init fan_out'),
    (nn.ConvTranspose2d, 'bias'): (('const', 0.), 'F:291 kaiming_init(bias=0)'),
}
OFFICIAL_CLASSIFIER = {  # norm, neck and head of L:355-363, all by L:374
    (nn.Linear, 'weight'): (TRUNC_02, 'L:480 (the head too: apply() passes no name)'),
    (nn.Linear, 'bias'): (('const', 0.), 'L:481-482'),
    (nn.LayerNorm, 'weight'): (('const', 1.), 'L:488-490'),
    (nn.LayerNorm, 'bias'): (('const', 0.), 'L:488-490'),
}


def groups(model, table):
    """[(name, tensor, distribution, source)] for every parameter; fails on a
    parameter that the table does not cover."""
    out, seen = [], set()
    for module_name, module in model.named_modules():
        for pname, param in module.named_parameters(recurse=False):
            name = f'{module_name}.{pname}'.lstrip('.')
            key = pname if pname in table else next(
                (k for k in table if isinstance(k, tuple) and isinstance(module, k[0])
                 and k[1] == pname), None)
            assert key is not None, f'{name} ({type(module).__name__}) has no official init'
            dist, source = table[key]
            out.append((name, param.detach(), dist(module) if callable(dist) else dist, source))
            seen.add(name)
    assert seen == {n for n, _ in model.named_parameters()}
    return out


def check(name, w, dist, source):
    kind, value = dist
    where = f'{name} {tuple(w.shape)} vs official {dist} ({source})'
    if kind == 'const':
        assert torch.all(w == value), where
        return
    n = w.numel()
    tol = 4 / math.sqrt(n)  # ~4 sigma of the sample std's relative error (and more)
    if kind == 'uniform':
        assert w.abs().max() <= value * (1 + 1e-6), where
        if n >= 64:
            assert w.abs().max() >= value * (1 - 8 / n), where
        std = value / math.sqrt(3)
    else:
        std = value
        tails = w[w.abs() > 7 * std]
        if kind == 'trunc_normal':  # only the clamped extreme draws may lie there
            assert torch.all(tails.abs() == 2.) and tails.numel() <= 2 + n * 1e-6, where
        else:
            assert tails.numel() == 0, where
        w = w[w.abs() <= 7 * std]
    assert abs(w.mean().item()) <= 5 * std / math.sqrt(n), where
    assert abs(w.std().item() / std - 1) <= max(tol, 0.05), where


def test_backbone_init_is_the_official():
    # the init code is the same for every arch; T keeps the test cheap
    torch.manual_seed(0)
    model = LightViT(arch='tiny')
    model.init_weights()
    checked = groups(model, OFFICIAL_BACKBONE)
    for item in checked:
        check(*item)
    # every group is present
    assert {type(m) for m in model.modules()} >= {nn.Linear, nn.LayerNorm, nn.BatchNorm2d,
                                                  nn.Conv2d}


def test_fpn_convs_are_xavier_uniform_and_the_transposed_conv_kaiming():
    torch.manual_seed(0)
    neck = LightViTFPN([64, 128, 256], 256, num_outs=5, num_extra_trans_convs=1)
    neck.init_weights()
    checked = groups(neck, OFFICIAL_FPN)
    for item in checked:
        check(*item)
    # the 3x3 output conv of the issue: Xavier-uniform std sqrt(6 / (2 * 2304)) / sqrt(3)
    w = neck.fpn_convs[0].conv.weight
    assert w.std().item() == pytest.approx(math.sqrt(2 / (2 * 256 * 9)), rel=0.02)
    assert any(isinstance(m, nn.ConvTranspose2d) for m in neck.modules())


def test_fpn_extra_convs_are_xavier_too():
    torch.manual_seed(0)
    neck = LightViTFPN([64, 128, 256], 256, num_outs=5, num_extra_trans_convs=0,
                       add_extra_convs='on_input')
    neck.init_weights()
    for item in groups(neck, OFFICIAL_FPN):
        check(*item)


def test_classifier_neck_and_head_init_is_the_official():
    from mmpretrain.models import LinearClsHead
    torch.manual_seed(0)
    neck = LightViTClsNeck(256, 1280)
    head = LinearClsHead(1000, 1280, init_cfg=dict(type='TruncNormal', layer='Linear',
                                                   std=.02, bias=0.))
    for module in (neck, head):
        module.init_weights()
        for item in groups(module, OFFICIAL_CLASSIFIER):
            check(*item)


def test_check_tells_kaiming_from_xavier():
    # the bug: a 3x3 256->256 conv Kaiming-initialised (std 0.0295)
    # fails the Xavier-uniform check (std 0.0208)
    torch.manual_seed(0)
    conv = nn.Conv2d(256, 256, 3)
    nn.init.kaiming_normal_(conv.weight, mode='fan_out', nonlinearity='relu')
    dist = OFFICIAL_FPN[(nn.Conv2d, 'weight')][0](conv)
    with pytest.raises(AssertionError):
        check('conv.weight', conv.weight.detach(), dist, 'F:192-196')


def test_zero_global_tokens_as_the_released_detection_code(tmp_path, mini_arch, official_vectors):
    # The released T detector: more tokens than the checkpoint's, which mmcv's
    # non-strict load skipped, so they stay torch.zeros (det/lightvit.py:376).
    path = str(tmp_path / 'det.pth')
    state = official_vectors['det_state_dict']
    torch.save(state, path)
    model = LightViT(arch=dict(mini_arch, num_tokens=10), init_cfg=dict(
        type='Pretrained', checkpoint=path, global_token_init='zeros'))
    model.init_weights()
    assert model.global_token.shape[1] == 10 and torch.all(model.global_token == 0)
    own = model.state_dict()
    loaded = [k for k in state if k != 'global_token' and k in own]
    assert len(loaded) > 10
    assert all(torch.equal(own[k], state[k]) for k in loaded)
    with pytest.raises(ValueError, match="'strict', 'repeat' or 'zeros'"):
        LightViT(arch=mini_arch).load_pretrained(path, global_token_init='zero')

"""Loading official LightViT checkpoints in every released format
(lightvit_mm/models/backbones/lightvit_weights.py, the converter tool), the
global-token tiling of every load path, and the errors of bad checkpoints."""
import argparse
import os.path as osp

import pytest
import torch
from conftest import MINI, REPO, ErrorCases, build_model, load_tool

from lightvit_mm.models import LightViT
from lightvit_mm.models.backbones.lightvit_weights import infer_lightvit_arch

CONVERTER = load_tool('tools/model_converters/lightvit_official_to_mm.py')
official_to_mmpretrain = CONVERTER.official_to_mmpretrain
CASES = ErrorCases()


def save(obj, tmp_path, name='checkpoint.pth'):
    path = str(tmp_path / name)
    torch.save(obj, path)
    return path


def pretrained(checkpoint, arch=MINI, **kwargs):
    model = LightViT(arch=arch, init_cfg=dict(type='Pretrained', checkpoint=checkpoint, **kwargs))
    model.init_weights()


@pytest.fixture
def cls_state(official_vectors):
    return official_vectors['cls_state_dict']


def backbone_keys(state_dict):
    return {k: v for k, v in state_dict.items() if k.split('.')[0] not in ('norm', 'neck', 'head')}


def pretrained_model(mini_arch, path, **kwargs):
    model = LightViT(arch=mini_arch, init_cfg=dict(type='Pretrained', checkpoint=path, **kwargs))
    model.init_weights()
    return model


def assert_loaded(model, expected):
    state = model.state_dict()
    for key, value in expected.items():
        assert torch.equal(state[key], value), key


FORMATS = {
    'raw': lambda sd: dict(sd),
    'state_dict': lambda sd: {'state_dict': dict(sd)},
    'training': lambda sd: {'epoch': 299, 'model': dict(sd), 'optimizer': {'lr': 1e-6},
                            'ema_model': {k: v + 1 for k, v in sd.items()}},
    'mmpretrain': lambda sd: {'state_dict': official_to_mmpretrain(sd),
                              'meta': {'epoch': 300}},
    'ddp': lambda sd: {'state_dict': {'module.' + k: v for k, v in sd.items()}},
    'mmdet_ddp': lambda sd: {'state_dict': {'module.backbone.' + k: v
                                            for k, v in backbone_keys(sd).items()}},
}


@pytest.mark.parametrize('fmt', sorted(FORMATS))
def test_formats_load_every_backbone_tensor(tmp_path, mini_arch, cls_state, fmt):
    path = str(tmp_path / f'{fmt}.pth')
    torch.save(FORMATS[fmt](cls_state), path)
    model = LightViT(arch=mini_arch)
    report = model.load_pretrained(path)
    assert_loaded(model, backbone_keys(cls_state))
    assert report['unexpected'] == []
    assert report['missing'] == ['norm0.weight', 'norm0.bias', 'norm1.weight', 'norm1.bias',
                                 'norm2.weight', 'norm2.bias']  # output norms: detection only
    expected_ignored = 0 if fmt == 'mmdet_ddp' else 8 if fmt != 'mmpretrain' else 0
    assert len(report['ignored']) == expected_ignored


def test_ema_weights_on_request(tmp_path, mini_arch, cls_state):
    path = str(tmp_path / 'training.pth')
    torch.save(FORMATS['training'](cls_state), path)
    model = pretrained_model(mini_arch, path, checkpoint_key='ema_model')
    assert_loaded(model, {k: v + 1 for k, v in backbone_keys(cls_state).items()})
    raw = str(tmp_path / 'raw.pth')
    torch.save(dict(cls_state), raw)
    with pytest.raises(KeyError, match="no 'ema_model'"):
        pretrained_model(mini_arch, raw, checkpoint_key='ema_model')


def test_detection_checkpoint_through_init_cfg_gives_official_outputs(
        tmp_path, mini_arch, official_vectors):
    path = str(tmp_path / 'det.pth')
    torch.save({'state_dict': official_vectors['det_state_dict']}, path)
    model = pretrained_model(mini_arch, path).eval()
    with torch.no_grad():
        outs = model(official_vectors['det_input'])
    for out, ref in zip(outs, official_vectors['det_outputs']):
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_global_token_count(tmp_path, mini_arch, official_vectors_v2):
    path = str(tmp_path / 'det.pth')
    torch.save(official_vectors_v2['det_state_dict'], path)
    # 'strict' (the default) refuses another count, a whole multiple too (the
    # message: 'checkpoint with another number of global tokens')
    with pytest.raises(ValueError, match=r"has 4 global tokens .* the model 8 .*"
                       r"num_tokens=4.*global_token_init='repeat'"):
        pretrained_model(dict(mini_arch, num_tokens=8), path)
    tiled = pretrained_model(dict(mini_arch, num_tokens=10), path,
                             global_token_init='repeat').eval()
    tokens = official_vectors_v2['det_state_dict']['global_token']
    assert torch.equal(tiled.global_token, torch.cat([tokens, tokens, tokens[:, :2]], 1))
    # Whole copies nearly keep the network's function (v2 weights, outputs of
    # scale 3): 8 tokens = 2 x 4 give the attentions of 4, and only the FFN's
    # bi-dimensional attention, a mean over all tokens, sees the copies ...
    doubled = pretrained_model(dict(mini_arch, num_tokens=8), path,
                               global_token_init='repeat').eval()
    x, refs = official_vectors_v2['det_input_even'], official_vectors_v2['det_outputs_even']
    with torch.no_grad():
        outs, partial = doubled(x), tiled(x)
    assert 1e-5 < max(float((o - r).abs().max()) for o, r in zip(outs, refs)) < 5e-3
    # ... a partial copy (10 = 4 + 4 + 2) weighs tokens 1-2 more in every attention.
    assert max(float((o - r).abs().max()) for o, r in zip(partial, refs)) > 3e-2


def test_every_load_path_tiles_whole_multiples(tmp_path, mini_arch, official_vectors_v2):
    """The load-state-dict pre-hook: ``load_state_dict``, mmengine's
    ``load_checkpoint`` and a Runner's ``load_from`` (a whole model, the
    backbone under ``backbone.``, loaded non-strictly) tile 4 global tokens
    to 8 as the Pretrained init_cfg's ``global_token_init='repeat'`` does."""
    from mmengine.model import BaseModel
    from mmengine.runner import Runner
    from mmengine.runner.checkpoint import load_checkpoint

    class Detector(BaseModel):
        def __init__(self):
            super().__init__()
            self.backbone = LightViT(arch=dict(mini_arch, num_tokens=8))

        def forward(self, *args, **kwargs):
            raise NotImplementedError
    state = official_vectors_v2['det_state_dict']
    path, whole = str(tmp_path / 'det.pth'), str(tmp_path / 'detector.pth')
    torch.save(state, path)
    torch.save({'meta': {}, 'state_dict': {'backbone.' + k: v for k, v in state.items()}}, whole)
    expected = pretrained_model(dict(mini_arch, num_tokens=8), path,
                                global_token_init='repeat').state_dict()
    tokens = state['global_token']
    assert torch.equal(expected['global_token'], torch.cat([tokens, tokens], 1))

    direct = LightViT(arch=dict(mini_arch, num_tokens=8))
    direct.load_state_dict(state, strict=True)
    through_mmengine = Detector()
    load_checkpoint(through_mmengine, whole, map_location='cpu', strict=True)
    runner = Runner(model=Detector(), work_dir=str(tmp_path / 'work_dir'), load_from=whole)
    runner.load_or_resume()
    for model in (direct, through_mmengine.backbone, runner.model.backbone):
        loaded = model.state_dict()
        assert loaded.keys() == expected.keys()
        for key, value in expected.items():
            assert torch.equal(loaded[key], value), key


@pytest.mark.parametrize('num_tokens', [10, 2])
def test_load_paths_refuse_partial_copies(tmp_path, mini_arch, official_vectors_v2,
                                          num_tokens):
    """10 or 2 tokens from 4: not a whole multiple, so ``load_state_dict``
    and mmengine's non-strict ``load_checkpoint`` fail and say what to do
    (the init_cfg's ``global_token_init='repeat'`` tiles them anyway)."""
    from mmengine.runner.checkpoint import load_checkpoint
    path = str(tmp_path / 'det.pth')
    torch.save(official_vectors_v2['det_state_dict'], path)
    message = (rf'global_token has 4 global tokens \(1, 4, 16\), the model {num_tokens} '
               rf'\(1, {num_tokens}, 16\), not a whole multiple of 4: build the model with '
               r"num_tokens=4.*global_token_init='repeat'.*global_token_init='zeros'")
    model = LightViT(arch=dict(mini_arch, num_tokens=num_tokens))
    with pytest.raises(ValueError, match=message):
        model.load_state_dict(official_vectors_v2['det_state_dict'])
    with pytest.raises(ValueError, match=message):
        load_checkpoint(model, path, map_location='cpu', strict=False)
    assert pretrained_model(dict(mini_arch, num_tokens=num_tokens), path,
                            global_token_init='repeat').global_token.shape[1] == num_tokens


# --- checkpoints ----------------------------------------------------------------
@CASES('checkpoint path that does not exist', FileNotFoundError,
      r"checkpoint file '.*/no_such_dir/lightvit_tiny.pth' does not exist")
def _(tmp_path):
    LightViT(init_cfg=dict(type='Pretrained', checkpoint=str(
        tmp_path / 'no_such_dir' / 'lightvit_tiny.pth'))).init_weights()


@CASES('checkpoint of another model (no key matched)', KeyError,
      r'no key of .*checkpoint.pth', r"first keys \['conv1.weight'",
      r"matches the LightViT backbone \(e.g. \['global_token'",
      r'Is it a LightViT checkpoint\? Set init_cfg.s prefix')
def _(tmp_path):
    import torchvision
    pretrained(save({'state_dict': torchvision.models.resnet18().state_dict()}, tmp_path))


@CASES('checkpoint of another LightViT size', ValueError,
      r'shapes in .* differ from the model',
      r'global_token: checkpoint \(1, 4, 32\) vs model \(1, 4, 16\)')
def _(tmp_path):
    other = LightViT(arch=dict(MINI, embed_dims=[32, 64, 128]))
    pretrained(save(other.state_dict(), tmp_path))


@CASES('checkpoint with another number of global tokens', ValueError,
      r'has 8 global tokens \(1, 8, 16\), the model 4 \(1, 4, 16\)',
      r'build the model with num_tokens=8', r"global_token_init='repeat'")
def _(tmp_path):
    pretrained(save(LightViT(arch=dict(MINI, num_tokens=8)).state_dict(), tmp_path))


@CASES('checkpoint that is not a dict', ValueError, r'a checkpoint must be a dict, got list')
def _(tmp_path):
    pretrained(save([torch.zeros(1)], tmp_path))


@CASES('checkpoint_key unknown', KeyError,
      r"checkpoint_key must be 'model' or 'ema_model', got 'ema'")
def _(tmp_path):
    pretrained(save(LightViT(arch=MINI).state_dict(), tmp_path), checkpoint_key='ema')


@CASES('checkpoint holding arbitrary pickled objects', RuntimeError,
      r'holds objects that weights-only loading refuses',
      r"If you trust the file, load it with weights_only=False")
def _(tmp_path):
    # The message does not name the refused global (argparse.Namespace):
    # load_checkpoint_file keeps only the first line of torch's error, a
    # generic sentence; the name is on a later line ("Unsupported global").
    state = LightViT(arch=MINI).state_dict()
    pretrained(save({'state_dict': state, 'args': argparse.Namespace(lr=1)}, tmp_path))


@CASES('checkpoint of an unknown format', ValueError,
      r'unrecognised checkpoint format: expected a state dict',
      r"top-level keys: \['epoch', 'weights'\]")
def _(tmp_path):
    pretrained(save({'epoch': 3, 'weights': [1, 2]}, tmp_path))


@pytest.mark.parametrize('name', list(CASES))
def test_bad_checkpoint_gives_clear_error(name, tmp_path):
    CASES.check(name, tmp_path)


class Custom:
    pass


def test_weights_only_false_opts_in(tmp_path, mini_arch, cls_state):
    path = str(tmp_path / 'pickled.pth')
    torch.save({'state_dict': dict(cls_state), 'extra': Custom()}, path)
    # refused by default: see 'checkpoint holding arbitrary pickled objects'
    model = pretrained_model(mini_arch, path, weights_only=False)
    assert_loaded(model, backbone_keys(cls_state))


def test_infer_arch(official_vectors, mini_arch):
    info = infer_lightvit_arch(official_vectors['cls_state_dict'])
    assert info['arch'] == dict(mini_arch, mlp_ratios=[4.0, 2.0, 2.0])
    assert info['window_size'] == 7
    assert (info['num_classes'], info['neck_dims']) == (10, 48)


@pytest.mark.parametrize('target', ['mmpretrain', 'backbone'])
def test_converter(tmp_path, official_vectors, mini_arch, target, capsys):
    src = str(tmp_path / 'official.ckpt')
    torch.save({'epoch': 1, 'model': official_vectors['cls_state_dict'],
                'ema_model': official_vectors['cls_state_dict']}, src)
    dst = str(tmp_path / 'out' / 'converted.pth')
    tool = load_tool('tools/model_converters/lightvit_official_to_mm.py')
    tool.main([src, dst, '--to', target])
    assert 'outputs verified equal' in capsys.readouterr().out
    state = torch.load(dst, weights_only=True)['state_dict']
    if target == 'mmpretrain':
        expected = official_to_mmpretrain(official_vectors['cls_state_dict'])
        assert list(state) == list(expected)
        assert all(torch.equal(state[k], v) for k, v in expected.items())
    else:
        model = LightViT(arch=mini_arch)
        model.load_pretrained(dst)
        assert_loaded(model, backbone_keys(official_vectors['cls_state_dict']))
    with pytest.raises(SystemExit) as again:
        tool.main([src, dst])
    assert again.value.code != 0 and 'pass --force' in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == ['converted.pth']


def build_from_config(path, **model_overrides):
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(REPO, path))
    for key, value in model_overrides.items():
        target = cfg.model
        *parents, leaf = key.split('.')
        for parent in parents:
            target = target[parent]
        target[leaf] = value
    return build_model(cfg)


@pytest.mark.parametrize('fmt,key', [('raw', 'model'), ('state_dict', 'model'),
                                     ('training', 'model'), ('training', 'ema_model')])
def test_mmpretrain_config_gives_official_logits(tmp_path, official_vectors, mini_arch,
                                                 fmt, key):
    """The classifier of configs/mmpretrain (arch shrunk to the reference one) loads an
    official checkpoint, converted by the converter tool, and returns the official logits."""
    src, dst = str(tmp_path / 'official.ckpt'), str(tmp_path / 'mm.pth')
    state = official_vectors['cls_state_dict']
    torch.save(FORMATS[fmt](state) if key == 'model' else
               {'model': {k: v + 1 for k, v in state.items()}, 'ema_model': dict(state)}, src)
    tool = load_tool('tools/model_converters/lightvit_official_to_mm.py')
    tool.main([src, dst, '--checkpoint-key', key])
    neck_dims = official_vectors['cls_neck_dim']
    model = build_from_config(
        'configs/mmpretrain/lightvit-tiny_8xb128_in1k.py', **{
            'backbone.arch': mini_arch, 'neck.in_channels': mini_arch['embed_dims'][-1],
            'neck.out_channels': neck_dims, 'head.in_channels': neck_dims,
            'head.num_classes': official_vectors['cls_num_classes']})
    model.load_state_dict(torch.load(dst, weights_only=True)['state_dict'], strict=True)
    model.eval()
    with torch.no_grad():
        logits = model(official_vectors['cls_input'], mode='tensor')
    torch.testing.assert_close(logits, official_vectors['cls_logits'], atol=1e-5, rtol=0)


@pytest.mark.parametrize('config', [
    'configs/mmdet/mask-rcnn_lightvit-t_lightvit-fpn_1x_coco.py',
    'configs/mmseg/lightvit-t-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py'])
def test_downstream_configs_load_an_official_checkpoint(tmp_path, config):
    torch.manual_seed(0)
    source = LightViT(arch='tiny', out_type='raw')
    source.init_weights()
    backbone_state = source.state_dict()
    official = dict(backbone_state, **{'norm.weight': torch.rand(256), 'norm.bias': torch.rand(256),
                                       'head.weight': torch.rand(1000, 1280)})
    path = str(tmp_path / 'lightvit_tiny.ckpt')
    torch.save({'epoch': 299, 'model': official, 'ema_model': official}, path)
    model = build_from_config(config, **{'backbone.init_cfg.checkpoint': path})
    model.init_weights()
    loaded = model.backbone.state_dict()
    for key, value in backbone_state.items():
        assert torch.equal(loaded[key], value), key

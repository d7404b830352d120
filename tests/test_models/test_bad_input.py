"""Bad input, clear errors: every mistake a user can make with the backbone,
the neck, a config or a checkpoint, and the message it gets.

Each case asserts that the message names what was wrong and, where the
message has it, what is accepted. ``pytest tests/test_models/test_bad_input.py -s``
prints every message.

The last test: a non-finite pixel makes its whole image's features NaN, and
only its image's.
"""
import argparse
import os.path as osp
import re

import pytest
import torch
from conftest import REPO, build_model

from lightvit_mm import LightViT, LightViTFPN

MINI = dict(embed_dims=[16, 32, 64], depths=[1, 1, 1], num_heads=[2, 2, 4],
            mlp_ratios=[2, 2, 2], num_tokens=4)
CASES = {}


def case(name, error, *patterns):
    """Register ``func(tmp_path)``, which must raise ``error`` with a message
    matching every regex of ``patterns``."""
    def register(func):
        CASES[name] = (func, error, patterns)
        return func
    return register


def save(obj, tmp_path, name='checkpoint.pth'):
    path = str(tmp_path / name)
    torch.save(obj, path)
    return path


def pretrained(checkpoint, arch=MINI, **kwargs):
    model = LightViT(arch=arch, init_cfg=dict(type='Pretrained', checkpoint=checkpoint, **kwargs))
    model.init_weights()


# --- architecture -----------------------------------------------------------
@case('unknown arch name', KeyError,
      r"Unknown LightViT arch 'huge'",
      r"accepted: \['b', 'base', 's', 'small', 't', 'tiny'\] or a dict with keys "
      r"\['embed_dims', 'depths', 'num_heads', 'mlp_ratios', 'num_tokens'\]")
def _(tmp_path):
    LightViT(arch='huge')


@case('arch of another type', TypeError, r'arch must be a str or a dict, got int')
def _(tmp_path):
    LightViT(arch=3)


@case('arch dict missing a key', ValueError,
      r"arch dict is missing \['num_tokens'\]",
      r"needs all of \['embed_dims', 'depths', 'num_heads', 'mlp_ratios', 'num_tokens'\]")
def _(tmp_path):
    LightViT(arch={k: v for k, v in MINI.items() if k != 'num_tokens'})


@case('arch lists of different lengths', ValueError,
      r'must have one value per stage',
      r"'embed_dims': 3, 'depths': 2")
def _(tmp_path):
    LightViT(arch=dict(MINI, depths=[1, 1]))


@case('num_heads not dividing a width', ValueError,
      r'num_heads 3 does not divide embed_dims 16')
def _(tmp_path):
    LightViT(arch=dict(MINI, num_heads=[3, 2, 4]))


# --- other constructor arguments --------------------------------------------
@case('out_indices out of range', ValueError,
      r'Invalid out_indices \(0, 3\)', r'each must be an int in \[-3, 2\]')
def _(tmp_path):
    LightViT(arch=MINI, out_indices=(0, 3))


@case('out_indices naming a stage twice', ValueError,
      r'out_indices \(0, -3\) name a stage twice')
def _(tmp_path):
    LightViT(arch=MINI, out_indices=(0, -3))  # -3 is stage 0


@case('out_indices empty', TypeError,
      r'out_indices must be an int or a non-empty sequence of ints, got \(\)')
def _(tmp_path):
    LightViT(arch=MINI, out_indices=())


@case('frozen_stages out of range', ValueError,
      r'frozen_stages must be in \[-1, 3\]', r'-1: none, 0: stem, k: stem \+ first k stages',
      r'got 4')
def _(tmp_path):
    LightViT(arch=MINI, frozen_stages=4)


@case('out_type unknown', ValueError, r"out_type must be 'featmap' or 'raw', got 'tokens'")
def _(tmp_path):
    LightViT(arch=MINI, out_type='tokens')


@case('misspelled backbone argument in a config', TypeError,
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
@case('input not 4-D', ValueError,
      r'expects images of shape \(B, 3, H, W\), got \(3, 64, 64\)')
def _(tmp_path):
    LightViT(arch=MINI)(torch.rand(3, 64, 64))


@case('wrong channel count', ValueError,
      r'expects images of shape \(B, 3, H, W\), got \(2, 1, 64, 64\)')
def _(tmp_path):
    LightViT(arch=MINI)(torch.rand(2, 1, 64, 64))


@case('image smaller than 8x8', ValueError,
      r'needs images of at least 8x8 pixels', r'got 5x40')
def _(tmp_path):
    LightViT(arch=MINI)(torch.rand(1, 3, 5, 40))


# --- checkpoints ----------------------------------------------------------------
@case('checkpoint path that does not exist', FileNotFoundError,
      r"checkpoint file '.*/no_such_dir/lightvit_tiny.pth' does not exist")
def _(tmp_path):
    LightViT(init_cfg=dict(type='Pretrained', checkpoint=str(
        tmp_path / 'no_such_dir' / 'lightvit_tiny.pth'))).init_weights()


@case('checkpoint of another model (no key matched)', KeyError,
      r'no key of .*checkpoint.pth', r"first keys \['conv1.weight'",
      r"matches the LightViT backbone \(e.g. \['global_token'",
      r'Is it a LightViT checkpoint\? Set init_cfg.s prefix')
def _(tmp_path):
    import torchvision
    pretrained(save({'state_dict': torchvision.models.resnet18().state_dict()}, tmp_path))


@case('checkpoint of another LightViT size', ValueError,
      r'shapes in .* differ from the model',
      r'global_token: checkpoint \(1, 4, 32\) vs model \(1, 4, 16\)')
def _(tmp_path):
    other = LightViT(arch=dict(MINI, embed_dims=[32, 64, 128]))
    pretrained(save(other.state_dict(), tmp_path))


@case('checkpoint with another number of global tokens', ValueError,
      r'has 8 global tokens \(1, 8, 16\), the model 4 \(1, 4, 16\)',
      r'build the model with num_tokens=8', r"global_token_init='repeat'")
def _(tmp_path):
    pretrained(save(LightViT(arch=dict(MINI, num_tokens=8)).state_dict(), tmp_path))


@case('checkpoint that is not a dict', ValueError, r'a checkpoint must be a dict, got list')
def _(tmp_path):
    pretrained(save([torch.zeros(1)], tmp_path))


@case('checkpoint_key unknown', KeyError,
      r"checkpoint_key must be 'model' or 'ema_model', got 'ema'")
def _(tmp_path):
    pretrained(save(LightViT(arch=MINI).state_dict(), tmp_path), checkpoint_key='ema')


@case('checkpoint holding arbitrary pickled objects', RuntimeError,
      r'holds objects that weights-only loading refuses',
      r"If you trust the file, load it with weights_only=False")
def _(tmp_path):
    # The message does not name the refused global (argparse.Namespace):
    # load_checkpoint_file keeps only the first line of torch's error, a
    # generic sentence; the name is on a later line ("Unsupported global").
    state = LightViT(arch=MINI).state_dict()
    pretrained(save({'state_dict': state, 'args': argparse.Namespace(lr=1)}, tmp_path))


# --- neck -----------------------------------------------------------------------
@case('neck given fewer levels than in_channels', ValueError,
      r'LightViTFPN expects 3 input levels \(in_channels=\[16, 32, 64\]\), got 2')
def _(tmp_path):
    backbone = LightViT(arch=MINI, out_indices=(1, 2)).eval()
    LightViTFPN(in_channels=[16, 32, 64], out_channels=8, num_outs=5)(
        backbone(torch.rand(1, 3, 64, 64)))


@case('neck in_channels not matching the backbone widths', RuntimeError,
      r'expected input\[1, 32, 8, 8\] to have 16 channels, but got 32 channels')
def _(tmp_path):
    # torch's own message: LightViTFPN does not check widths (see the report).
    backbone = LightViT(arch=dict(MINI, embed_dims=[32, 64, 128])).eval()
    LightViTFPN(in_channels=[16, 32, 64], out_channels=8, num_outs=5)(
        backbone(torch.rand(1, 3, 64, 64)))


@case('neck num_outs too small', ValueError,
      r'num_outs \(3\) must be at least len\(in_channels\) \(3\) \+ num_extra_trans_convs \(1\)')
def _(tmp_path):
    LightViTFPN(in_channels=[16, 32, 64], out_channels=8, num_outs=3)


@case('neck add_extra_convs unknown', ValueError,
      r"add_extra_convs must be a bool or one of 'on_input', 'on_lateral', 'on_output', "
      r"got 'on_inputs'")
def _(tmp_path):
    LightViTFPN(in_channels=[16, 32, 64], out_channels=8, num_outs=6,
                add_extra_convs='on_inputs')


def message_of(error):
    return error.args[0] if isinstance(error, KeyError) and error.args else str(error)


@pytest.mark.parametrize('name', list(CASES))
def test_bad_input_gives_clear_error(name, tmp_path):
    func, error, patterns = CASES[name]
    with pytest.raises(error) as info:
        func(tmp_path)
    message = message_of(info.value)
    print(f'\n[{name}] {type(info.value).__name__}: {message}')
    for pattern in patterns:
        assert re.search(pattern, message), f'{pattern!r} not in {message!r}'


# --- NaN / Inf -------------------------------------------------------------------
# mmengine does not stop on a non-finite loss by default (docs/robust_training.md
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

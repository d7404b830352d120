import pytest
import torch
from conftest import MINI, ErrorCases, load_official_backbone

from lightvit_mm.models import LightViT, LightViTFPN

CASES = ErrorCases()


def backbone_maps(batch=1, size=(50, 66), widths=(64, 128, 256)):
    h, w = size
    maps = []
    for c in widths:
        maps.append(torch.rand(batch, c, h, w))
        h, w = (h + 1) // 2, (w + 1) // 2
    return maps


def test_paper_setting_strides_4_to_64():
    neck = LightViTFPN([64, 128, 256], 256, num_outs=5)
    neck.init_weights()
    feats = backbone_maps(2, (50, 66))  # stride-8 maps of a 400x528 image
    outs = neck(feats)
    assert [tuple(o.shape) for o in outs] == [
        (2, 256, 100, 132), (2, 256, 50, 66), (2, 256, 25, 33), (2, 256, 13, 17),
        (2, 256, 7, 9)]
    assert type(neck.extra_trans_convs[0].conv).__name__ == 'ConvTranspose2d'


@pytest.mark.parametrize('num_extra', [0, 2])
def test_number_of_transposed_levels(num_extra):
    neck = LightViTFPN([64, 128, 256], 32, num_outs=3 + num_extra + 1,
                       num_extra_trans_convs=num_extra)
    outs = neck(backbone_maps(1, (16, 16)))
    sides = [o.shape[-1] for o in outs]
    assert sides == [16 * 2**k for k in range(num_extra, 0, -1)] + [16, 8, 4, 2]
    assert all(o.shape[1] == 32 for o in outs)


def test_extra_convs_on_input_for_retinanet():
    neck = LightViTFPN([64, 128, 256], 16, num_outs=5, num_extra_trans_convs=0,
                       add_extra_convs='on_input')
    outs = neck(backbone_maps(1, (32, 32)))
    assert [o.shape[-1] for o in outs] == [32, 16, 8, 4, 2]
    assert neck.fpn_convs[3].conv.in_channels == 256


# --- neck -----------------------------------------------------------------------
@CASES('neck given fewer levels than in_channels', ValueError,
      r'LightViTFPN expects 3 input levels \(in_channels=\[16, 32, 64\]\), got 2')
def _(tmp_path):
    backbone = LightViT(arch=MINI, out_indices=(1, 2)).eval()
    LightViTFPN(in_channels=[16, 32, 64], out_channels=8, num_outs=5)(
        backbone(torch.rand(1, 3, 64, 64)))


@CASES('neck in_channels not matching the backbone widths', RuntimeError,
      r'expected input\[1, 32, 8, 8\] to have 16 channels, but got 32 channels')
def _(tmp_path):
    # torch's own message: LightViTFPN does not check widths (see the report).
    backbone = LightViT(arch=dict(MINI, embed_dims=[32, 64, 128])).eval()
    LightViTFPN(in_channels=[16, 32, 64], out_channels=8, num_outs=5)(
        backbone(torch.rand(1, 3, 64, 64)))


@CASES('neck num_outs too small', ValueError,
      r'num_outs \(3\) must be at least len\(in_channels\) \(3\) \+ num_extra_trans_convs \(1\)')
def _(tmp_path):
    LightViTFPN(in_channels=[16, 32, 64], out_channels=8, num_outs=3)


@CASES('neck add_extra_convs unknown', ValueError,
      r"add_extra_convs must be a bool or one of 'on_input', 'on_lateral', 'on_output', "
      r"got 'on_inputs'")
def _(tmp_path):
    LightViTFPN(in_channels=[16, 32, 64], out_channels=8, num_outs=6,
                add_extra_convs='on_inputs')


@pytest.mark.parametrize('name', list(CASES))
def test_bad_input_gives_clear_error(name, tmp_path):
    CASES.check(name, tmp_path)


def official_fpn(reference):
    neck = LightViTFPN(**reference['fpn_cfg'])
    neck.load_state_dict(reference['fpn_state_dict'], strict=True)
    return neck.eval()


@pytest.mark.parametrize('case', ['', '_even'])
def test_matches_official_fpn(official_vectors_v2, case):
    """The official ``LightViTFPN`` (hunto/LightViT ``detection/lightvit_fpn.py``)
    on the official backbone's v2 features: same outputs, strides 4 to 64."""
    ref = official_vectors_v2
    neck = official_fpn(ref)
    with torch.no_grad():
        outs = neck(ref[f'det_outputs{case}'])
    assert len(outs) == len(ref[f'fpn_outputs{case}']) == 5
    for out, expected in zip(outs, ref[f'fpn_outputs{case}']):
        assert out.shape == expected.shape
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_backbone_and_fpn_match_official_end_to_end(official_vectors_v2, mini_arch):
    ref = official_vectors_v2
    backbone = LightViT(arch=mini_arch, window_size=ref['arch']['window_size'])
    load_official_backbone(backbone, ref['det_state_dict']).eval()
    neck = official_fpn(ref)
    with torch.no_grad():
        outs = neck(backbone(ref['det_input']))
    for out, expected in zip(outs, ref['fpn_outputs']):
        torch.testing.assert_close(out, expected, atol=2e-5, rtol=0)

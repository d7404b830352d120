"""ONNX export (tools/deployment/export_onnx.py): one exported model, dynamic
batch/height/width, reproduces the eager outputs at other sizes than the one
it was exported at, within 1e-4, in onnxruntime. Every export here uses the
small MINI arch, which has every part of the model (three stages, patch
merging, several heads, global tokens) at a fraction of LightViT-T's export
time: the tool's command line on a config that inherits the shipped Mask R-CNN
config with a MINI backbone (the tool checks ONNX Runtime and OpenVINO
itself), the rest in this process. LightViT-T itself is exported whole in
test_deployment."""
import os.path as osp
import subprocess
import sys
import warnings

import pytest
import torch
from conftest import MINI, REPO, load_official_backbone, load_tool

ort = pytest.importorskip('onnxruntime', reason='onnxruntime is not installed '
                          "(pip install -e '.[tests]')")
onnx = pytest.importorskip('onnx', reason="onnx is not installed (pip install -e '.[tests]')")

TOOL = osp.join(REPO, 'tools/deployment/export_onnx.py')
SIZES = [(224, 224), (200, 264), (97, 131), (8, 8)]
ATOL = 1e-4


@pytest.fixture(scope='module')
def tool():
    return load_tool(osp.relpath(TOOL, REPO))


def compare(model, path, sizes, batch=2):
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    generator = torch.Generator().manual_seed(0)
    for h, w in sizes:
        x = torch.randn(batch, 3, h, w, generator=generator)
        with torch.no_grad():
            expected = model(x)
        got = session.run(None, {'input': x.numpy()})
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            assert g.shape == tuple(e.shape), (h, w)
            diff = float((torch.from_numpy(g) - e).abs().max())
            assert diff <= ATOL, f'{h}x{w}: max |onnxruntime - eager| = {diff}'


def test_backbone_exported_at_224_runs_at_any_size(tool, tmp_path):
    from lightvit_mm import LightViT
    torch.manual_seed(0)
    model = LightViT(arch=MINI).eval()
    path = str(tmp_path / 'lightvit_mini.onnx')
    tool.export(model, path, (224, 224))
    graph = onnx.load(path).graph
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == ['batch', 3, 'height', 'width']
    assert [o.name for o in graph.output] == ['out0', 'out1', 'out2']
    compare(model, path, SIZES + [(224, 232)])
    compare(model, path, [(64, 96)], batch=1)


def test_backbone_with_neck_from_config_cli(tool, tmp_path):
    config = tmp_path / 'mask-rcnn_lightvit-mini_lightvit-fpn.py'
    shipped = osp.join(REPO, 'configs/mmdet/mask-rcnn_lightvit-t_lightvit-fpn_1x_coco.py')
    config.write_text(f'_base_ = {shipped!r}\n'
                      f'model = dict(backbone=dict(arch=dict(_delete_=True, **{MINI!r})),\n'
                      f'             neck=dict(in_channels={MINI["embed_dims"]!r}))\n')
    path = str(tmp_path / 'lightvit_mini_fpn.onnx')
    run = subprocess.run([sys.executable, TOOL, str(config), path, '--with-neck', '--shape', '200',
                          '264', '--atol', str(ATOL)], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert 'onnxruntime vs eager at 224x224' in run.stdout
    assert 'onnxruntime vs eager at 200x264' in run.stdout
    assert len(onnx.load(path).graph.output) == 5  # strides 4, 8, 16, 32, 64


def test_build_model_from_an_arch_name(tool):
    """The arch-name source (the command line's other one is a config file)."""
    from lightvit_mm import LightViT, LightViTFPN
    backbone = tool.build_model('tiny')
    assert isinstance(backbone, LightViT) and not backbone.training
    assert list(backbone.embed_dims) == [64, 128, 256]
    model = tool.build_model('tiny', with_neck=True)
    assert isinstance(model, tool.BackboneWithNeck) and isinstance(model.neck, LightViTFPN)
    assert model.neck.num_outs == 5


def test_official_v2_weights_through_onnx(tool, tmp_path, official_vectors_v2, mini_arch):
    """Backbone and FPN with the official v2 weights (our own position index),
    exported from a 200x264 example: onnxruntime gives the official FPN
    outputs at 200x264 (padding) and at 2x224x224 (none)."""
    from lightvit_mm import LightViT, LightViTFPN
    ref = official_vectors_v2
    backbone = LightViT(arch=mini_arch, window_size=ref['arch']['window_size'])
    load_official_backbone(backbone, ref['det_state_dict'])
    neck = LightViTFPN(**ref['fpn_cfg'])
    neck.load_state_dict(ref['fpn_state_dict'], strict=True)
    model = tool.BackboneWithNeck(backbone, neck).eval()
    path = str(tmp_path / 'mini_fpn.onnx')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        tool.export(model, path, (200, 264))
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    for case in ('', '_even'):
        got = session.run(None, {'input': ref[f'det_input{case}'].numpy()})
        assert len(got) == len(ref[f'fpn_outputs{case}']) == 5
        for g, expected in zip(got, ref[f'fpn_outputs{case}']):
            torch.testing.assert_close(torch.from_numpy(g), expected, atol=5e-5, rtol=0)

"""The backbone exported once runs at every size: ``torch.export`` captures
LightViT with dynamic batch, height and width (no Python branch on the size),
and the ONNX written by torch's exporter (``torch.onnx.export(dynamo=True)``)
at one size reproduces the eager outputs at other sizes -- sizes whose grids
need window padding, odd grids before patch merging, 8x8 (a 1x1 grid) -- in
onnxruntime and in OpenVINO (CPU, fp32) within 1e-4."""
import logging

import pytest
import torch
import torch.fx.experimental._config as fx_config
from mmengine.logging import MMLogger
from torch.export import Dim

from lightvit_mm import LightViT

ATOL = 1e-4
EXPORT_SIZE = (64, 96)  # grids 8x12, 4x6, 2x3: stage 0 needs window padding, stage 2 does not
SIZES = [(97, 131), (64, 320), (56, 56), (8, 8), (33, 47)]  # odd, wide, exact windows, 1x1 grid
# Small but with every part of the model: three stages with patch merging,
# several heads, blocks that keep and the last one that drops the global tokens.
ARCH = dict(embed_dims=[16, 32, 64], depths=[1, 1, 1], num_heads=[2, 2, 4],
            mlp_ratios=[2, 2, 2], num_tokens=4)


def dynamic_sizes():
    return {0: Dim('batch', min=1, max=1024), 2: Dim('height', min=8, max=8192),
            3: Dim('width', min=8, max=8192)}


@pytest.fixture(scope='module')
def model():
    MMLogger.get_current_instance().setLevel(logging.WARNING)
    torch.manual_seed(0)
    backbone = LightViT(arch=ARCH)
    backbone.init_weights()
    return backbone.eval()


def eager(model, x):
    with torch.no_grad():
        return [o.numpy() for o in model(x)]


def images(sizes, batch=2):
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(batch, 3, h, w, generator=generator) for h, w in sizes]


def assert_close(got, want, where):
    assert [g.shape for g in got] == [w.shape for w in want], where
    diff = max(float(abs(g - w).max()) for g, w in zip(got, want))
    assert diff <= ATOL, f'{where}: max |diff| {diff:.2e} > {ATOL}'


def test_torch_export_dynamic_sizes(model):
    # backed_size_oblivious: sizes of 1 are not specialised (torch.onnx.export
    # with dynamo=True exports the same way).
    with torch.no_grad(), fx_config.patch(backed_size_oblivious=True):
        program = torch.export.export(model, (torch.randn(2, 3, *EXPORT_SIZE), ),
                                      dynamic_shapes={'x': dynamic_sizes()})
    ranges = {str(r.lower) + '..' + str(r.upper) for r in program.range_constraints.values()}
    assert ranges == {'1..1024', '8..8192'}  # nothing specialised or narrowed
    exported = program.module()
    for x in images(SIZES) + images([(40, 24)], batch=1):
        with torch.no_grad():
            assert_close([o.numpy() for o in exported(x)], eager(model, x), tuple(x.shape))


@pytest.fixture(scope='module')
def onnx_file(model, tmp_path_factory):
    pytest.importorskip('onnxscript', reason="torch's ONNX exporter needs onnxscript "
                        "(pip install -e '.[deploy]')")
    path = str(tmp_path_factory.mktemp('onnx') / 'lightvit.onnx')
    with torch.no_grad():
        torch.onnx.export(model, (torch.randn(2, 3, *EXPORT_SIZE), ), path, dynamo=True,
                          input_names=['input'], dynamic_shapes=(dynamic_sizes(), ),
                          opset_version=18, external_data=False, verbose=False)
    return path


def run_onnxruntime(path):
    ort = pytest.importorskip('onnxruntime', reason="onnxruntime is not installed "
                              "(pip install -e '.[deploy]')")
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    return lambda x: session.run(None, {'input': x})


def run_openvino(path):
    ov = pytest.importorskip('openvino', reason="openvino is not installed "
                             "(pip install -e '.[deploy]')")
    compiled = ov.Core().compile_model(path, 'CPU', {'INFERENCE_PRECISION_HINT': 'f32'})
    return lambda x: [compiled(x)[o] for o in compiled.outputs]


@pytest.mark.parametrize('runtime', [run_onnxruntime, run_openvino],
                         ids=['onnxruntime', 'openvino'])
def test_onnx_exported_at_one_size_runs_at_others(model, onnx_file, runtime):
    run = runtime(onnx_file)
    for x in images(SIZES) + images([EXPORT_SIZE, (40, 24)], batch=1):
        assert_close(run(x.numpy()), eager(model, x), f'{runtime.__name__} {tuple(x.shape)}')

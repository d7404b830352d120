"""Deployed-model precisions (lightvit_mm.deploy.precision and quantize):
the CPU capability check (mocked, so both branches run on any machine), the
``precision`` of deploy.json and the OpenVINO hint it becomes, and int8
exports of a small classifier that hold quantized graphs and run near fp32."""
import json
import os.path as osp
import shutil
import warnings

import pytest
import torch
from conftest import CLS_DIGITS_CONFIG

from lightvit_mm.deploy import precision as precision_module
from lightvit_mm.deploy.precision import (
    CpuCapabilities,
    check_precision,
    parse_cpuinfo,
    runtime_precision,
)

HAS_OPENVINO = __import__('importlib').util.find_spec('openvino') is not None
HAS_NNCF = __import__('importlib').util.find_spec('nncf') is not None
HAS_ORT = __import__('importlib').util.find_spec('onnxruntime') is not None
needs_openvino = pytest.mark.skipif(not HAS_OPENVINO, reason='openvino not installed')

SAPPHIRE_RAPIDS = CpuCapabilities(
    'Intel(R) Xeon(R) Platinum 8480+', ('avx2', 'fma', 'avx512f', 'avx512_vnni', 'avx512_bf16',
                                        'avx512_fp16', 'amx_tile', 'amx_bf16', 'amx_int8'),
    'AVX512', ('FP32', 'BF16', 'FP16', 'INT8', 'BIN', 'EXPORT_IMPORT'))
ZEN2 = CpuCapabilities('AMD EPYC', ('avx2', 'fma'), 'AVX2',
                       ('FP32', 'INT8', 'BIN', 'EXPORT_IMPORT'))
CLS_SIZE = 32


def _small_backbone():
    """A 3-stage LightViT of random weights (seed 0), a (2, 3, 64, 64) input
    and its eager fp32 stage outputs."""
    from lightvit_mm import LightViT
    torch.manual_seed(0)
    model = LightViT(arch=dict(embed_dims=[16, 32, 64], depths=[1, 1, 1], num_heads=[1, 2, 4],
                               mlp_ratios=[2, 2, 2], num_tokens=4)).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
    return model, x, expected


def test_parse_cpuinfo_keeps_the_relevant_flags():
    text = ('processor\t: 0\nmodel name\t: Intel Xeon\nflags\t\t: fpu sse avx2 fma avx512f '
            'avx512_bf16 amx_tile amx_bf16 amx_int8 avx512_vnni\n\nprocessor\t: 1\n'
            'model name\t: other\nflags\t\t: fpu\n')
    name, flags = parse_cpuinfo(text)
    assert name == 'Intel Xeon'
    assert flags == ('avx2', 'fma', 'avx512f', 'avx512_vnni', 'avx512_bf16', 'amx_tile',
                     'amx_bf16', 'amx_int8')
    assert parse_cpuinfo('') == ('', ())


def test_capabilities_per_backend():
    assert SAPPHIRE_RAPIDS.bf16_units and SAPPHIRE_RAPIDS.int8_units
    assert not ZEN2.bf16_units and not ZEN2.int8_units
    assert SAPPHIRE_RAPIDS.runs_bf16('openvino') and SAPPHIRE_RAPIDS.runs_bf16('pytorch')
    assert not SAPPHIRE_RAPIDS.runs_bf16('onnxruntime')
    assert not ZEN2.runs_bf16('openvino') and not ZEN2.runs_bf16('pytorch')
    # OpenVINO's own list decides for OpenVINO (a plugin without bf16 kernels for this CPU)
    no_plugin_bf16 = CpuCapabilities('x', ('avx512_bf16', ), 'AVX512', ('FP32', 'INT8'))
    assert no_plugin_bf16.runs_bf16('pytorch') and not no_plugin_bf16.runs_bf16('openvino')
    assert 'AMD EPYC; flags: avx2 fma; torch: AVX2; OpenVINO CPU: FP32' in ZEN2.describe()
    with pytest.raises(ValueError, match='unknown backend'):
        ZEN2.runs_bf16('tensorrt')


def test_this_machine_is_described():
    caps = precision_module.cpu_capabilities()
    assert caps.torch_capability == torch.backends.cpu.get_cpu_capability()
    if HAS_OPENVINO:
        assert 'FP32' in caps.openvino


def test_check_precision_refuses_and_warns():
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        check_precision('fp16', 'openvino', ZEN2)
    with pytest.raises(ValueError, match='no bf16 inference on x86'):
        check_precision('bf16', 'onnxruntime', SAPPHIRE_RAPIDS)
    with pytest.warns(UserWarning, match='no bf16 matrix units .* in fp32 here'):
        check_precision('bf16', 'openvino', ZEN2)
    with pytest.warns(UserWarning, match='no int8 dot-product units'):
        check_precision('int8', 'onnxruntime', ZEN2)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        check_precision('bf16', 'openvino', SAPPHIRE_RAPIDS)
        check_precision('int8', 'openvino', SAPPHIRE_RAPIDS)
        check_precision('fp32', 'onnxruntime', ZEN2)


def test_runtime_precision_falls_back_where_bf16_is_missing(monkeypatch):
    monkeypatch.setattr(precision_module, 'cpu_capabilities', lambda: ZEN2)
    with pytest.warns(UserWarning, match='exported for bf16, but openvino runs no bf16'):
        assert runtime_precision('bf16', 'openvino') == 'fp32'
    monkeypatch.setattr(precision_module, 'cpu_capabilities', lambda: SAPPHIRE_RAPIDS)
    assert runtime_precision('bf16', 'openvino') == 'bf16'
    assert runtime_precision('int8', 'onnxruntime') == 'int8'
    with pytest.raises(ValueError, match='unknown precision'):
        runtime_precision('int4', 'openvino')


def test_calibration_inputs_thin_rois_and_split_images():
    from lightvit_mm.deploy.quantize import calibration_inputs
    rois = torch.arange(100.).view(100, 1).expand(100, 3)
    items = calibration_inputs([(rois, ), (rois[:3], ), (rois[:0], )], 'num_rois', max_rois=4)
    assert len(items) == 2  # the call without RoIs gives nothing
    assert items[0][0][:, 0].tolist() == [0, 33, 66, 99] and items[1][0].shape == (3, 3)
    images = torch.randn(3, 3, 8, 8)
    items = calibration_inputs([(images, )], '')
    assert [i[0].shape for i in items] == [(1, 3, 8, 8)] * 3
    assert (items[2][0] == images[2:].numpy()).all()
    batch = calibration_inputs([([images, images], )], 'batch')
    assert len(batch) == 1 and len(batch[0]) == 2 and batch[0][0].shape == (3, 3, 8, 8)


# ---------------------------------------------------------------------------
# Exports of the digits classifier (random weights, 32x32)
# ---------------------------------------------------------------------------
def cls_cfg(root):
    """The digits classifier config on the tiny set at ``root``: test batch 2,
    calibration (training) images from the same set."""
    from mmengine.config import Config
    cfg = Config.fromfile(CLS_DIGITS_CONFIG)
    for loader in (cfg.test_dataloader, cfg.train_dataloader):
        loader.update(batch_size=2, num_workers=0, persistent_workers=False)
        loader.dataset.data_root = root + '/'
    return cfg


@pytest.fixture(scope='module')
def tiny_cls_root(tmp_path_factory):
    """4 train and 2 val images of 32x32 (mmpretrain CustomDataset layout)."""
    from lightvit_mm.demo_data.digits import build_digits_cls
    root = str(tmp_path_factory.mktemp('tiny_cls'))
    build_digits_cls(root, num_train=4, num_val=2, image_size=CLS_SIZE, digit_size=(12, 24))
    return root


@pytest.fixture(scope='module')
def ov_bf16_folder(tiny_cls_root, tmp_path_factory):
    """The classifier exported for OpenVINO with precision bf16."""
    if not HAS_OPENVINO:
        pytest.skip('openvino not installed')
    from lightvit_mm.deploy import export_model
    folder = str(tmp_path_factory.mktemp('ov_bf16'))
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # no bf16 units here: the export says so
        export_model(cls_cfg(tiny_cls_root), None, 'openvino', folder, num_images=2,
                     precision='bf16')
    return folder


@needs_openvino
def test_bf16_folder_records_and_applies_its_precision(ov_bf16_folder, monkeypatch, tmp_path):
    from lightvit_mm.deploy import DeployedFolderError, DeployedModel
    with open(osp.join(ov_bf16_folder, 'deploy.json')) as f:
        manifest = json.load(f)
    assert manifest['precision'] == 'bf16' and manifest['quantization'] is None
    assert 'torch:' in manifest['exported_on']['cpu']

    monkeypatch.setattr(precision_module, 'cpu_capabilities', lambda: ZEN2)
    with pytest.warns(UserWarning, match='running it in fp32'):
        model = DeployedModel(ov_bf16_folder)
    assert model.precision == 'fp32'
    hint = model.graphs['scores'].compiled.get_property('INFERENCE_PRECISION_HINT')
    assert str(hint) == "<Type: 'float32'>"

    monkeypatch.setattr(precision_module, 'cpu_capabilities', lambda: SAPPHIRE_RAPIDS)
    model = DeployedModel(ov_bf16_folder)
    assert model.precision == 'bf16' and 'precision=bf16' in repr(model)
    hint = str(model.graphs['scores'].compiled.get_property('INFERENCE_PRECISION_HINT'))
    # what the plugin runs: bf16 where it has bf16 kernels for this CPU, else it keeps f32
    real = precision_module.openvino_capabilities()
    assert hint == ("<Type: 'bfloat16'>" if 'BF16' in real else "<Type: 'float32'>")

    crafted = str(tmp_path / 'crafted')
    shutil.copytree(ov_bf16_folder, crafted)
    manifest['precision'] = 'fp8'
    with open(osp.join(crafted, 'deploy.json'), 'w') as f:
        json.dump(manifest, f)
    with pytest.raises(DeployedFolderError, match="unknown precision 'fp8'"):
        DeployedModel(crafted)
    del manifest['precision']  # a folder of an earlier lightvit_mm: fp32
    with open(osp.join(crafted, 'deploy.json'), 'w') as f:
        json.dump(manifest, f)
    assert DeployedModel(crafted).precision == 'fp32'


def test_export_refuses_bf16_for_onnxruntime(tiny_cls_root, tmp_path):
    from lightvit_mm.deploy import export_model
    with pytest.raises(ValueError, match='bf16 is not offered for ONNX Runtime'):
        export_model(cls_cfg(tiny_cls_root), None, 'onnxruntime', str(tmp_path),
                     precision='bf16')
    assert not osp.exists(tmp_path / 'deploy.json')


@pytest.mark.parametrize('backend, quantized_op', [
    pytest.param('openvino', 'FakeQuantize', marks=pytest.mark.skipif(
        not (HAS_OPENVINO and HAS_NNCF), reason='openvino or nncf not installed')),
    pytest.param('onnxruntime', 'QuantizeLinear', marks=pytest.mark.skipif(
        not HAS_ORT, reason='onnxruntime not installed')),
])
def test_int8_export_is_quantized_and_runs(backend, quantized_op, tiny_cls_root, tmp_path):
    """An int8 export holds quantized operations outside the stem only, and
    its scores stay near PyTorch's fp32 ones (random weights)."""
    from lightvit_mm.deploy import compare, export_model
    from lightvit_mm.deploy.exporter import TOLERANCES
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # no int8 units on some machines: said, not tested
        result = export_model(cls_cfg(tiny_cls_root), None, backend, str(tmp_path),
                              num_images=2, precision='int8', calib_images=4)
    info = result['quantization']['scores']
    assert result['precision'] == 'int8' and info['calibration_items'] == 2  # 2 batches of 2
    assert info['quantized_inputs'] > 10 and info['kept_fp32_nodes'] > 0
    if backend == 'openvino':
        import openvino as ov
        ops = ov.Core().read_model(str(tmp_path / 'scores.xml')).get_ops()
        quantized = {o.get_friendly_name() for o in ops if o.get_type_name() == quantized_op}
        consumers = [o for o in ops if o.get_type_name() == 'Convolution']
        stem = [o for o in consumers if 'patch_embed' in o.get_friendly_name()]
        assert stem and all(o.input_value(0).get_node().get_type_name() != quantized_op
                            for o in stem)
    else:
        import onnx
        nodes = onnx.load(str(tmp_path / 'scores.onnx')).graph.node
        quantized = {n.name for n in nodes if n.op_type == quantized_op}
        stem_convs = [n for n in nodes if n.op_type == 'Conv' and 'patch_embed' in n.name]
        producers = {o: n.op_type for n in nodes for o in n.output}
        assert stem_convs and all(producers.get(n.input[0]) != 'DequantizeLinear'
                                  for n in stem_convs)
    assert len(quantized) == info['quantized_inputs']
    errors = compare(str(tmp_path), result['_model'], result['_specs'], result['_calls'])
    worst = max(errors['scores'])
    assert 0 < worst <= TOLERANCES['int8'], worst


def test_benchmark_rows_compute_the_same(monkeypatch):
    """The deploy table's low-precision rows (speed_rows) run and give
    what fp32 gives, within bf16's and int8's rounding; their names say what
    runs where the CPU lacks bf16 units (mocked)."""
    from lightvit_mm.deploy import speed_rows
    monkeypatch.setattr(speed_rows, 'cpu_capabilities', lambda: ZEN2)
    gemms = speed_rows.gemm_rows(size=16)
    assert list(gemms) == ['fp32 GEMM', 'bf16 GEMM (no bf16 units: emulated)',
                           'int8 GEMM (torch._int_mm)']
    assert all(row.flop == 2 * 16**3 for row in gemms.values())
    assert [row.precision for row in gemms.values()] == ['fp32', 'bf16', 'int8']
    fp32, bf16 = gemms['fp32 GEMM'].call(), gemms['bf16 GEMM (no bf16 units: emulated)'].call()
    assert float((bf16.float() - fp32).norm() / fp32.norm()) < 1e-2
    assert gemms['int8 GEMM (torch._int_mm)'].call().dtype == torch.int32

    model, x, expected = _small_backbone()
    rows = speed_rows.pytorch_rows(model, x, compile=False)
    assert list(rows) == ['PyTorch eager bf16 autocast (no bf16 units: emulated)']
    outs = rows['PyTorch eager bf16 autocast (no bf16 units: emulated)'].call()
    assert torch.bfloat16 in {o.dtype for o in outs}  # autocast ran
    for got, ref in zip(outs, expected):
        assert got.shape == ref.shape
        assert float((got.float() - ref).norm() / ref.norm()) < 5e-2


@pytest.mark.skipif(not (HAS_OPENVINO and HAS_NNCF and HAS_ORT),
                    reason='openvino, nncf or onnxruntime not installed')
def test_runtime_rows_run_near_fp32(monkeypatch, tmp_path):
    """The fp32 rows of a small backbone's ONNX graph in both runtimes equal
    eager fp32; OpenVINO bf16 / int8 and ONNX Runtime int8 rows run and stay
    near it (int8 calibrated on the input); each row says what precision it
    runs in (bf16 falls back to fp32 without bf16 units, mocked)."""
    import numpy as np

    from lightvit_mm.deploy import speed_rows
    monkeypatch.setattr(speed_rows, 'cpu_capabilities', lambda: ZEN2)
    monkeypatch.setattr(precision_module, 'cpu_capabilities', lambda: ZEN2)
    model, x, expected = _small_backbone()
    path = str(tmp_path / 'backbone.onnx')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        speed_rows.export_static_onnx(model, x, path)
        rows = speed_rows.runtime_rows(path, x, str(tmp_path))
    assert list(rows) == ['ONNX Runtime fp32', 'OpenVINO fp32',
                          'OpenVINO bf16 (no bf16 units: runs f32)', 'OpenVINO int8 (NNCF)',
                          'ONNX Runtime int8 (quantize_static)']
    assert [row.precision for row in rows.values()] == ['fp32', 'fp32', 'fp32', 'int8', 'int8']
    for name, row in rows.items():
        outs = row.call()
        errors = [float(np.linalg.norm(o - e.numpy()) / e.norm()) for o, e in zip(outs, expected)]
        # bf16 runs f32 here (mocked: no bf16 units); int8 measured 0.004-0.01 / 0.10-0.15 /
        # 0.21-0.25 relative L2 on the three stages (random weights, calibrated on x itself)
        limit = 1e-4 if row.precision == 'fp32' else 0.4
        assert len(outs) == 3 and max(errors) < limit, (name, errors)


@pytest.mark.skipif(not HAS_ORT, reason='onnxruntime not installed')
def test_whole_model_rows_predict_alike_and_say_where_time_goes(tmp_path):
    """The deploy table's whole-model rows: the digits Mask R-CNN (random
    weights, every box kept) on one synthetic image as PyTorch eager and as a
    deployed ONNX Runtime folder gives the same detections and masks, and
    time_parts splits each into its parts (PyTorch modules / graphs) and the
    rest."""
    from conftest import DIGITS_CONFIG
    from mmengine.config import Config

    from lightvit_mm.deploy import speed_rows
    cfg = Config.fromfile(DIGITS_CONFIG)
    cfg.merge_from_dict({'model.test_cfg.rcnn.score_thr': 0.0})
    rows, models = speed_rows.whole_model_rows(cfg, (64, 96), str(tmp_path),
                                               backends=('onnxruntime', ), bf16=False)
    assert list(rows) == ['PyTorch eager fp32', 'ONNX Runtime fp32']
    assert [row.precision for row in rows.values()] == ['fp32', 'fp32']
    (eager, ), (deployed, ) = (row.call() for row in rows.values())
    ours, theirs = eager.pred_instances, deployed.pred_instances
    assert len(ours) > 0 and len(ours) == len(theirs)
    assert torch.equal(ours.labels, theirs.labels)
    torch.testing.assert_close(theirs.bboxes, ours.bboxes, atol=1e-2, rtol=1e-3)
    assert (theirs.masks != ours.masks).float().mean() < 1e-3
    parts = speed_rows.time_parts(rows['PyTorch eager fp32'].call, models['PyTorch eager fp32'],
                                  repeats=1)
    assert set(parts) == {'backbone', 'neck', 'rpn_head', 'roi_head.bbox_head',
                          'roi_head.mask_head', 'rest', 'total'}
    graphs = speed_rows.time_parts(rows['ONNX Runtime fp32'].call, models['ONNX Runtime fp32'],
                                   repeats=1)
    assert set(graphs) == {'extract_feat', 'rpn_head', 'roi_head.bbox_head',
                           'roi_head.mask_head', 'rest', 'total'}
    for times in (parts, graphs):
        assert all(t >= 0 for t in times.values())
        assert abs(sum(v for k, v in times.items() if k != 'total') - times['total']) < 1e-6
    assert 'run_graph' not in models['ONNX Runtime fp32'].__dict__  # the timer is removed

"""Whole-model deployment (lightvit_mm.deploy, tools/deployment/export.py and
test_deployed.py): each of the four model kinds, built from the digits
configs with random weights at small sizes, exports to ONNX Runtime and
OpenVINO and its graphs reproduce PyTorch; the deployed Mask R-CNN scores
the same COCO metrics as PyTorch through mmengine's Runner; crafted folders
and bad images are refused with clear errors."""
import copy
import json
import os
import os.path as osp
import shutil

import pytest
import torch
from conftest import (
    CLS_DIGITS_CONFIG,
    DIGITS_CONFIG,
    REPO,
    SEG_DIGITS_CONFIG,
    TINY_CANVAS,
    load_tool,
)

pytest.importorskip('onnx', reason="onnx is not installed (pip install -e '.[deploy]')")
pytest.importorskip('onnxruntime',
                    reason="onnxruntime is not installed (pip install -e '.[deploy]')")

from mmengine.config import Config  # noqa: E402

from lightvit_mm.deploy import DeployedFolderError, DeployedModel, compare, export_model  # noqa: E402
from lightvit_mm.deploy.exporter import TOLERANCE  # noqa: E402

RETINANET_DIGITS_CONFIG = osp.join(REPO,
                                   'configs/mmdet/digits/retinanet_lightvit-t_lightvit-fpn_digits.py')
BACKENDS = ['onnxruntime', pytest.param('openvino', marks=pytest.mark.skipif(
    __import__('importlib').util.find_spec('openvino') is None, reason='openvino not installed'))]
CLS_SIZE = 32


@pytest.fixture(scope='module')
def tiny_digits_cls(tmp_path_factory):
    """4 val images of 32x32 in mmpretrain's CustomDataset layout; the root."""
    from lightvit_mm.demo_data.digits import build_digits_cls
    root = str(tmp_path_factory.mktemp('tiny_digits_cls'))
    build_digits_cls(root, num_train=10, num_val=4, image_size=CLS_SIZE, digit_size=(12, 24))
    return root


def digits_cfg(kind, tiny_digits, tiny_digits_cls):
    """The digits config of ``kind``, pointed at the tiny datasets, test batch 2."""
    path = dict(cls=CLS_DIGITS_CONFIG, seg=SEG_DIGITS_CONFIG, retinanet=RETINANET_DIGITS_CONFIG,
                maskrcnn=DIGITS_CONFIG)[kind]
    cfg = Config.fromfile(path)
    loader = cfg.test_dataloader
    loader.update(batch_size=2, num_workers=0, persistent_workers=False)
    loader.dataset.data_root = (tiny_digits_cls if kind == 'cls' else tiny_digits) + '/'
    if kind in ('retinanet', 'maskrcnn'):
        loader.dataset.pipeline[1].scale = (TINY_CANVAS, TINY_CANVAS)
        cfg.test_evaluator.ann_file = osp.join(tiny_digits, 'annotations/instances_val.json')
    if kind == 'seg':
        cfg.model.data_preprocessor.size = (TINY_CANVAS, TINY_CANVAS)
    return cfg


@pytest.fixture(scope='module')
def exported(tiny_digits, tiny_digits_cls, tmp_path_factory):
    """``exported(kind, backend)``: the digits config of ``kind`` with random
    weights (seed 0) exported to ``backend`` on 2 images, once per module:
    (folder, the result of ``export_model``, the config)."""
    done = {}

    def export(kind, backend):
        if (kind, backend) not in done:
            torch.manual_seed(0)
            cfg = digits_cfg(kind, tiny_digits, tiny_digits_cls)
            folder = str(tmp_path_factory.mktemp(f'{kind}_{backend}'))
            done[kind, backend] = (folder, export_model(cfg, None, backend, folder, num_images=2),
                                   cfg)
        return done[kind, backend]
    return export


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('kind, task, graphs', [
    ('cls', 'classification', ['scores']),
    ('seg', 'segmentation', ['encode_decode']),
    ('retinanet', 'detection', ['extract_feat', 'bbox_head']),
    ('maskrcnn', 'instance-segmentation',
     ['extract_feat', 'rpn_head', 'roi_head.bbox_head', 'roi_head.mask_head']),
])
def test_export_reproduces_pytorch(kind, task, graphs, backend, exported):
    folder, result, _ = exported(kind, backend)
    assert result['task'] == task and list(result['graphs']) == graphs
    size = CLS_SIZE if kind == 'cls' else TINY_CANVAS
    assert result['input']['shape'] == [size, size]
    with open(osp.join(folder, 'deploy.json')) as f:
        manifest = json.load(f)
    assert set(manifest['files']) == {n for g in manifest['graphs'].values() for n in g['files']}
    errors = compare(folder, result['_model'], result['_specs'], result['_calls'])
    assert list(errors) == graphs
    for name, diffs in errors.items():
        assert diffs and max(diffs) <= TOLERANCE, (name, diffs)


@pytest.mark.parametrize('kind', ['seg', 'cls'])
def test_deployed_predictions_equal_pytorch(kind, exported):
    """The deployed UPerNet and classifier predict what PyTorch predicts, as
    the packages' data samples (mmseg's postprocess_result on the graph's
    logits; the classifier's scores and labels)."""
    from mmengine.registry import DefaultScope
    from mmengine.runner import Runner
    folder, result, cfg = exported(kind, 'onnxruntime')
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        batch = next(iter(Runner.build_dataloader(cfg.test_dataloader)))
    deployed = DeployedModel(folder).test_step(copy.deepcopy(batch))
    with torch.no_grad():
        expected = result['_model'].test_step(copy.deepcopy(batch))
    assert len(deployed) == len(expected) == 2
    for got, want in zip(deployed, expected):
        assert type(got) is type(want)
        if kind == 'seg':
            assert got.pred_sem_seg.data.shape == want.pred_sem_seg.data.shape
            torch.testing.assert_close(got.seg_logits.data, want.seg_logits.data,
                                       atol=1e-4, rtol=1e-4)
            assert (got.pred_sem_seg.data != want.pred_sem_seg.data).float().mean() < 1e-3
        else:
            torch.testing.assert_close(got.pred_score, want.pred_score, atol=1e-5, rtol=1e-4)
            assert torch.equal(got.pred_label, want.pred_label)


def test_deployed_maskrcnn_scores_pytorch_metrics(tiny_digits, tiny_digits_cls, tmp_path):
    """test_deployed.py (Runner + CocoMetric on the deployed model) gives the
    PyTorch model's bbox and segm mAP, and its predictions are mmdet's."""
    from mmdet.structures import DetDataSample
    from mmengine.runner import Runner

    from lightvit_mm.deploy.exporter import build_model
    torch.manual_seed(0)
    cfg = digits_cfg('maskrcnn', tiny_digits, tiny_digits_cls)
    # a random-weight model makes hundreds of low-score masks: keep a few
    cfg.model.test_cfg.rcnn.max_per_img = 10
    checkpoint = str(tmp_path / 'random.pth')
    model = build_model(cfg, None)
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, checkpoint)
    export_model(cfg, checkpoint, 'onnxruntime', str(tmp_path / 'ort'), num_images=2)

    deployed = DeployedModel(str(tmp_path / 'ort'), task='instance-segmentation')
    samples = deployed.test_step(next(iter(Runner.build_dataloader(cfg.test_dataloader))))
    assert isinstance(samples[0], DetDataSample)
    assert samples[0].pred_instances.masks.dtype == torch.bool

    tool = load_tool('tools/deployment/test_deployed.py')
    cfg_path = str(tmp_path / 'cfg.py')
    cfg.dump(cfg_path)
    got = tool.main([cfg_path, str(tmp_path / 'ort'), '--work-dir', str(tmp_path / 'eval')])
    runner_cfg = copy.deepcopy(cfg)
    runner_cfg.work_dir = str(tmp_path / 'eval_pt')
    runner_cfg.load_from = checkpoint
    expected = Runner.from_cfg(runner_cfg).test()
    for key in ('coco/bbox_mAP', 'coco/segm_mAP'):
        assert abs(got[key] - expected[key]) <= 0.005, (key, got[key], expected[key])


# ---------------------------------------------------------------------------
# Refusals (item 7): crafted folders and bad images
# ---------------------------------------------------------------------------
@pytest.fixture(scope='module')
def cls_folder(tiny_digits, tiny_digits_cls, tmp_path_factory):
    """A valid deployed classifier (ONNX Runtime, random weights)."""
    folder = str(tmp_path_factory.mktemp('deployed_cls'))
    torch.manual_seed(0)
    export_model(digits_cfg('cls', tiny_digits, tiny_digits_cls), None, 'onnxruntime', folder,
                 num_images=2)
    return folder


def crafted(cls_folder, tmp_path, edit=None):
    """A copy of ``cls_folder`` whose deploy.json went through ``edit``."""
    folder = str(tmp_path / 'crafted')
    shutil.copytree(cls_folder, folder)
    if edit is not None:
        path = osp.join(folder, 'deploy.json')
        with open(path) as f:
            manifest = json.load(f)
        edit(manifest, folder)
        with open(path, 'w') as f:
            json.dump(manifest, f)
    return folder


def rename_graph_file(new_name):
    def edit(manifest, folder):
        old = manifest['graphs']['scores']['files'][0]
        manifest['graphs']['scores']['files'] = [new_name]
        manifest['files'][new_name] = manifest['files'].pop(old)
    return edit


def test_valid_folder_loads(cls_folder):
    model = DeployedModel(cls_folder, task='classification')
    assert list(model.graphs) == ['scores']
    # the weightless copy holds no weights: every one is in the graph
    assert all(p is None for m in model.skeleton.backbone.modules()
               for p in m._parameters.values())


@pytest.mark.parametrize('name, message', [
    ('../scores.onnx', 'without ".."'),
    ('/etc/passwd', 'without ".."'),
    ('', 'relative file name'),
])
def test_paths_outside_the_folder_are_refused(cls_folder, tmp_path, name, message):
    folder = crafted(cls_folder, tmp_path, rename_graph_file(name))
    with pytest.raises(DeployedFolderError, match=message):
        DeployedModel(folder)


def test_symlink_out_of_the_folder_is_refused(cls_folder, tmp_path):
    outside = tmp_path / 'outside.onnx'
    shutil.copy(osp.join(cls_folder, 'scores.onnx'), outside)

    def edit(manifest, folder):
        os.symlink(outside, osp.join(folder, 'link.onnx'))
        rename_graph_file('link.onnx')(manifest, folder)

    with pytest.raises(DeployedFolderError, match='outside the deployed folder'):
        DeployedModel(crafted(cls_folder, tmp_path, edit))


def test_onnx_external_data_outside_the_folder_is_refused(cls_folder, tmp_path):
    """A graph whose weights are 'external data' at ../secret.bin: refused
    before ONNX Runtime would open that path."""
    import onnx
    (tmp_path / 'secret.bin').write_bytes(b'\0' * 64)

    def edit(manifest, folder):
        path = osp.join(folder, 'scores.onnx')
        model = onnx.load(path)
        tensor = model.graph.initializer[0]
        tensor.ClearField('raw_data')
        tensor.data_location = onnx.TensorProto.EXTERNAL
        del tensor.external_data[:]
        tensor.external_data.add(key='location', value='../secret.bin')
        onnx.save(model, path)
        from lightvit_mm.deploy.manifest import sha256_of
        manifest['files']['scores.onnx'] = sha256_of(path)

    with pytest.raises(DeployedFolderError, match='without ".."'):
        DeployedModel(crafted(cls_folder, tmp_path, edit))


def test_changed_file_is_refused(cls_folder, tmp_path):
    folder = crafted(cls_folder, tmp_path)
    with open(osp.join(folder, 'scores.onnx'), 'ab') as f:
        f.write(b'\0')
    with pytest.raises(DeployedFolderError, match='does not match'):
        DeployedModel(folder)


@pytest.mark.parametrize('edit, error, message', [
    (lambda m, f: m.update(format_version=99), DeployedFolderError, 'incompatible'),
    (lambda m, f: m.update(task='segmentation'), DeployedFolderError, 'not \'classification\''),
    (lambda m, f: m.update(backend='tensorrt'), DeployedFolderError, 'unknown backend'),
    (lambda m, f: m['model'].update(type='os.system'), ValueError, 'only registered names'),
    (lambda m, f: m['model']['backbone'].update(type='mmdet.NoSuchThing'), ValueError,
     'not registered'),
])
def test_crafted_manifest_is_refused(cls_folder, tmp_path, edit, error, message):
    with pytest.raises(error, match=message):
        DeployedModel(crafted(cls_folder, tmp_path, edit), task='classification')


def test_not_a_deployed_folder(tmp_path):
    with pytest.raises(DeployedFolderError, match='no deploy.json'):
        DeployedModel(str(tmp_path))
    (tmp_path / 'deploy.json').write_text('{"format": ')
    with pytest.raises(DeployedFolderError, match='not valid JSON'):
        DeployedModel(str(tmp_path))


@pytest.mark.parametrize('inputs, message', [
    ([], 'non-empty'),
    ([torch.zeros(1, CLS_SIZE, CLS_SIZE, dtype=torch.uint8)], '3-channel'),
    ([torch.zeros(4, CLS_SIZE, CLS_SIZE, dtype=torch.uint8)], 'got 4 channels'),
    ([torch.zeros(3, 0, CLS_SIZE, dtype=torch.uint8)], 'empty image'),
    ([torch.zeros(CLS_SIZE, CLS_SIZE, dtype=torch.uint8)], r'\(3, H, W\)'),
])
def test_bad_images_are_refused(cls_folder, inputs, message):
    model = DeployedModel(cls_folder)
    with pytest.raises(ValueError, match=message):
        model.test_step(dict(inputs=inputs, data_samples=None))


def test_wrong_size_for_a_static_classifier(cls_folder):
    model = DeployedModel(cls_folder)
    with pytest.raises(ValueError, match='static size 32x32'):
        model.test_step(dict(inputs=[torch.zeros(3, 40, 40, dtype=torch.uint8)]))

import glob
import os.path as osp

import pytest
import torch
from conftest import REPO
from mmengine.config import Config
from mmengine.registry import DefaultScope, init_default_scope

CONFIGS = sorted(glob.glob(osp.join(REPO, 'configs', '**', '*.py'), recursive=True))


def test_configs_found():
    # Guards against a wrong folder silently building zero configs.
    assert len(CONFIGS) >= 2, f'no configs under {osp.join(REPO, "configs")}'


def build_model(cfg):
    init_default_scope(cfg.default_scope)
    from mmengine.registry import MODELS
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        return MODELS.build(cfg.model)


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: osp.relpath(p, REPO))
def test_config_builds(path):
    cfg = Config.fromfile(path)
    assert cfg.custom_imports['imports'] == ['lightvit_mm']
    model = build_model(cfg)
    assert type(model.backbone).__name__ == 'LightViT'


def test_mask_rcnn_forward_loss_and_predict():
    """One training step and one prediction of Mask R-CNN + LightViT-T on CPU."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    from mmdet.structures.mask import BitmapMasks
    cfg = Config.fromfile(osp.join(REPO, 'configs/mmdet/mask-rcnn_lightvit-t_lightvit-fpn_digits.py'))
    torch.manual_seed(0)
    model = build_model(cfg)
    model.init_weights()
    samples = []
    for _ in range(2):
        sample = DetDataSample(metainfo=dict(img_shape=(96, 112), ori_shape=(96, 112),
                                             pad_shape=(96, 112), scale_factor=(1., 1.)))
        masks = torch.zeros(2, 96, 112, dtype=torch.uint8)
        masks[0, 10:40, 20:50] = 1
        masks[1, 50:90, 60:100] = 1
        sample.gt_instances = InstanceData(
            bboxes=torch.tensor([[20., 10., 50., 40.], [60., 50., 100., 90.]]),
            labels=torch.tensor([3, 7]),
            masks=BitmapMasks(masks.numpy(), 96, 112))
        samples.append(sample)
    data = dict(inputs=[torch.randint(0, 255, (3, 96, 112), dtype=torch.uint8)] * 2,
                data_samples=samples)
    model.train()
    batch = model.data_preprocessor(data, training=True)
    losses = model(**batch, mode='loss')
    assert {'loss_rpn_cls', 'loss_cls', 'loss_bbox', 'loss_mask'} <= set(losses)
    total = sum(v if torch.is_tensor(v) else sum(v) for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total)
    total.backward()
    assert model.backbone.stages[0][0].attn.qkv.weight.grad is not None
    assert model.neck.extra_trans_convs[0].conv.weight.grad is not None
    model.eval()
    with torch.no_grad():
        preds = model(**model.data_preprocessor(data, training=False), mode='predict')
    assert len(preds) == 2 and 'masks' in preds[0].pred_instances

import glob
import os.path as osp

import pytest
import torch
from conftest import REPO, build_model
from mmengine.config import Config

#: the model configs (configs/_base_ holds fragments that other configs inherit)
CONFIGS = sorted(p for p in glob.glob(osp.join(REPO, 'configs', '**', '*.py'), recursive=True)
                 if osp.relpath(p, REPO).split(osp.sep)[1] != '_base_')
#: configs/_base_/lightvit_no_decay.py, the paramwise_cfg of LightViT's no-decay
#: parameters (the YAML fragment it replaced held the same)
NO_DECAY = dict(norm_decay_mult=0.0,
                custom_keys=dict(relative_position_bias_table=dict(decay_mult=0.0),
                                 global_token=dict(decay_mult=0.0)))


#: the least number of configs each package folder must hold (issue 3: Mask R-CNN
#: 1x and 3x, RetinaNet, UPerNet and ImageNet configs for T, S and B)
MIN_CONFIGS = {'mmdet': 6, 'mmseg': 3, 'mmpretrain': 3}
#: stage widths per arch, and the official ImageNet checkpoint of each
WIDTHS = {'tiny': [64, 128, 256], 'small': [96, 192, 384], 'base': [128, 256, 512]}
RELEASE = 'https://github.com/hunto/LightViT/releases/download/v0.0.1/'
CHECKPOINTS = {'tiny': RELEASE + 'lightvit_tiny_78.7.ckpt',
               'small': RELEASE + 'lightvit_small_80.9.ckpt',
               'base': RELEASE + 'lightvit_base_82.1.ckpt'}


def test_configs_found():
    # Guards against a wrong folder silently building zero configs.
    assert len(CONFIGS) >= 2, f'no configs under {osp.join(REPO, "configs")}'
    for package, least in MIN_CONFIGS.items():
        found = glob.glob(osp.join(REPO, 'configs', package, '*.py'))
        assert len(found) >= least, (f'{len(found)} configs under configs/{package}, '
                                     f'expected at least {least}')


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: osp.relpath(p, REPO))
def test_config_builds(path):
    cfg = Config.fromfile(path)
    assert cfg.custom_imports['imports'] == ['lightvit_mm']
    model = build_model(cfg)
    assert type(model.backbone).__name__ == 'LightViT'
    # The widths the necks/heads expect are the backbone's.
    arch = cfg.model.backbone.get('arch', 'tiny')
    arch = {'t': 'tiny', 's': 'small', 'b': 'base'}.get(arch, arch)  # str aliases
    widths = model.backbone.embed_dims
    if isinstance(arch, str):
        assert widths == WIDTHS[arch]
    if cfg.default_scope == 'mmpretrain':
        assert model.neck.norm.normalized_shape == (widths[-1], )
    elif cfg.default_scope == 'mmseg':
        assert list(cfg.model.decode_head.in_channels) == widths
        assert cfg.model.auxiliary_head.in_channels == widths[cfg.model.auxiliary_head.in_index]
    else:
        assert list(cfg.model.neck.in_channels) == widths
    # A config starting from the official weights loads those of its own arch,
    # named by the top-level `pretrained` (what --cfg-options overrides is
    # model.backbone.init_cfg.checkpoint).
    init = cfg.model.backbone.get('init_cfg') or {}
    if isinstance(init, dict) and str(init.get('checkpoint')).startswith(RELEASE):
        assert init['checkpoint'] == CHECKPOINTS.get(arch) == cfg.get('pretrained')


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: osp.relpath(p, REPO))
def test_no_decay_fragment_resolves_as_before(path):
    """Every config inheriting the no-decay fragment gets it as its
    paramwise_cfg (the ImageNet configs add the official zero decay of
    biases and other 1-D tensors)."""
    cfg = Config.fromfile(path)
    if 'lightvit_no_decay' not in cfg:
        assert 'lightvit_no_decay' not in open(path).read()
        return
    assert cfg.lightvit_no_decay.to_dict() == NO_DECAY
    expected = dict(NO_DECAY, bias_decay_mult=0., flat_decay_mult=0.) if (
        cfg.default_scope == 'mmpretrain') else NO_DECAY
    assert cfg.optim_wrapper.paramwise_cfg.to_dict() == expected


@pytest.mark.parametrize('name,from_scratch', [
    ('mask-rcnn_lightvit-t_lightvit-fpn_digits.py', True),
    ('mask-rcnn_lightvit-t-digits-pre_lightvit-fpn_digits.py', False)])
def test_digits_stem_statistics_train_only_from_scratch(name, from_scratch):
    """From scratch, the stem BatchNorms normalise with batch statistics and
    learn them; from a pretrained backbone they keep its statistics (COCO's
    norm_eval=True)."""
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'mmdet', 'digits', name))
    backbone = build_model(cfg).backbone.train()
    norms = [m for m in backbone.patch_embed.stem if isinstance(m, torch.nn.BatchNorm2d)]
    before = [bn.running_mean.clone() for bn in norms]
    backbone(torch.rand(2, 3, 64, 64))
    for bn, mean in zip(norms, before):
        assert bn.training == from_scratch
        assert (not torch.equal(bn.running_mean, mean)) == from_scratch


def test_mask_rcnn_forward_loss_and_predict():
    """One training step and one prediction of Mask R-CNN + LightViT-T on CPU."""
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    cfg = Config.fromfile(
        osp.join(REPO, 'configs/mmdet/digits/mask-rcnn_lightvit-t_lightvit-fpn_digits.py'))
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


def test_retinanet_levels_match_anchor_strides():
    """LightViTFPN gives RetinaNet its 5 levels at strides 8..128."""
    cfg = Config.fromfile(
        osp.join(REPO, 'configs/mmdet/retinanet_lightvit-t_lightvit-fpn_1x_coco.py'))
    cfg.model.backbone.init_cfg = None
    model = build_model(cfg).eval()
    with torch.no_grad():
        feats = model.extract_feat(torch.rand(1, 3, 128, 256))
    strides = [128 // f.shape[2] for f in feats]
    assert strides == [256 // f.shape[3] for f in feats]
    assert strides == list(model.bbox_head.prior_generator.strides[i][0] for i in range(5))
    assert strides == [8, 16, 32, 64, 128]


def test_upernet_logits_at_stride_8():
    """UPerNet on LightViT's three levels: logits at stride 8 for the segmentor
    to upsample; the auxiliary head sees the stride-16 level."""
    from mmengine.model import revert_sync_batchnorm
    cfg = Config.fromfile(osp.join(
        REPO, 'configs/mmseg/lightvit-t-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py'))
    cfg.model.backbone.init_cfg = None
    model = revert_sync_batchnorm(build_model(cfg)).eval()
    with torch.no_grad():
        feats = model.extract_feat(torch.rand(1, 3, 96, 128))
        logits = model.decode_head(feats)
    assert [tuple(f.shape[1:]) for f in feats] == [(64, 12, 16), (128, 6, 8), (256, 3, 4)]
    assert tuple(logits.shape) == (1, 150, 12, 16)
    assert model.auxiliary_head.in_index == 1

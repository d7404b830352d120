"""Each paper config against the official training recipe, value by value.

Every entry of a table names a recipe value, how to read it from the resolved
config, the official value and its source (official file:line). A value that
differs from the official one on purpose names a phrase of the config's header
(its own or an inherited one) that explains it, and the test checks that the
header says it. Changing any of these values in a config fails the test.
``python tests/test_configs/test_recipe.py`` prints the tables as markdown.

Official sources: "det/" = github.com/hunto/LightViT ``detection/``;
"cls/" = github.com/hunto/image_classification_sota at 36539b6 (the commit
LightViT pins).
"""
import functools
import math
import os.path as osp
import re
import sys

import pytest
from mmengine.config import Config

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DET_1X = 'det/configs/mask_rcnn_lightvit_{}_fpn_1x_coco.py'
DET_3X = 'det/configs/mask_rcnn_lightvit_{}_fpn_3x_ms_coco.py'
DET_BACKBONE = 'det/lightvit.py'
DET_MODEL = 'det/configs/_base_/models/mask_rcnn_r50_fpn.py'
DET_DATA = 'det/configs/_base_/datasets/coco_instance.py'
DET_MS = 'det/configs/_base_/datasets/coco_instance_ms.py'
YAML = 'cls/configs/strategies/lightvit/config.yaml'
AUG = 'cls/lib/dataset/augment_ops.py'
TRANS = 'cls/lib/dataset/transform.py'
ARGS = 'cls/lib/utils/args.py'
CLS_MODEL = 'cls/lib/models/lightvit.py'
ARCHS = {'tiny': dict(t='t', tokens=8, line=433, widths=[64, 128, 256]),
         'small': dict(t='s', tokens=16, line=443, widths=[96, 192, 384]),
         'base': dict(t='b', tokens=24, line=453, widths=[128, 256, 512])}
RELEASE = 'https://github.com/hunto/LightViT/releases/download/v0.0.1/'
WEIGHTS = {'tiny': 'lightvit_tiny_78.7.ckpt', 'small': 'lightvit_small_80.9.ckpt',
           'base': 'lightvit_base_82.1.ckpt'}


class Entry:
    """A recipe value: ``get(config name)`` must give ``ours``, which must
    equal ``official`` unless ``differs`` (a phrase of the header) says why."""

    def __init__(self, name, get, official, source, ours=None, differs=None):
        self.name, self.get, self.official, self.source = name, get, official, source
        self.ours = official if ours is None else ours
        self.differs = differs


@functools.lru_cache(maxsize=None)
def load(name):
    return Config.fromfile(osp.join(REPO, 'configs', name))


def header(name):
    """The comment lines of a config and of the configs it inherits ('./')."""
    text, path = '', osp.join(REPO, 'configs', name)
    while True:
        with open(path) as f:
            source = f.read()
        text += ''.join(line[1:] for line in source.splitlines(True) if line.startswith('#'))
        base = re.search(r"^_base_ = '\./([^']+)'", source, re.M)
        if not base:
            return re.sub(r'\s+', ' ', text)
        path = osp.join(osp.dirname(path), base.group(1))


def c(path):
    """Reader of a dotted path (list indices allowed) of the resolved config."""
    def get(name):
        value = load(name)
        for key in path.split('.'):
            value = value[int(key)] if key.isdigit() else value.get(key)
        return plain(value)
    return get


def plain(value):
    """Config values as plain Python (tuples as lists) for comparison."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def step(kind, pipeline='train_dataloader.dataset.pipeline', index=0, keys=None):
    """Reader of one transform of a pipeline (optionally only some keys)."""
    def get(name):
        found = [t for t in c(pipeline)(name) if t['type'] == kind]
        if not found:
            return None
        t = found[index]
        return {k: t.get(k) for k in keys} if keys else t
    return get


def sched(kind, keys):
    def get(name):
        s = next((s for s in load(name).param_scheduler if s['type'] == kind), {})
        return {k: plain(s.get(k)) for k in keys}
    return get


def num_tokens(name):
    backbone = load(name).model.backbone
    if backbone.get('num_tokens') is not None:
        return backbone.num_tokens
    from lightvit_mm.models import LightViT
    return LightViT.arch_zoo[backbone.arch]['num_tokens']


def token_init(name):
    init = load(name).model.backbone.get('init_cfg') or {}
    return init.get('global_token_init', 'strict')


# --------------------------------------------------------------- no decay
@functools.lru_cache(maxsize=None)
def built(name):
    """The config's backbone and neck (and classifier head) in one module,
    with their parameter groups as its optimizer would build them."""
    import torch.nn as nn
    from mmengine.optim import build_optim_wrapper

    import lightvit_mm  # noqa: F401
    cfg = load(name)
    scope = cfg.default_scope
    registry = __import__(f'{scope}.registry', fromlist=['MODELS']).MODELS
    model = nn.Module()
    parts = ('backbone', 'neck', 'head') if scope == 'mmpretrain' else ('backbone', 'neck')
    for part in parts:
        part_cfg = cfg.model[part].to_dict()
        part_cfg.pop('init_cfg', None)
        setattr(model, part, registry.build(part_cfg))
    # the parameter groups do not depend on the wrapper; AmpOptimWrapper needs a GPU
    optim_cfg = dict(cfg.optim_wrapper.to_dict(), type='OptimWrapper')
    optim_cfg.pop('loss_scale', None)
    wrapper = build_optim_wrapper(model, optim_cfg)
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay = {names[id(p)] for g in wrapper.optimizer.param_groups
                if g['weight_decay'] == 0 for p in g['params']}
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    return shapes, no_decay


def no_decay_matches_official(rule):
    def get(name):
        shapes, no_decay = built(name)
        official = {n for n, s in shapes.items() if rule(n, s)}
        return sorted(no_decay ^ official) or 'same tensors'
    return get


def det_rule(name, shape):
    """det 1x config:27-34: mmcv 1.x custom_keys, substrings of the name."""
    keys = ('absolute_pos_embed', 'relative_position_bias_table', 'norm', 'stem.1',
            'stem.4', 'stem.7', 'stem.10', 'global_token')
    return any(k in name for k in keys)


def cls_rule(name, shape):
    """cls/lib/utils/optim.py:50-57 with L:381: every 1-D tensor, every bias,
    global_token and '[g]relative_position_bias_table'."""
    return (len(shape) == 1 or name.endswith('.bias') or name == 'backbone.global_token'
            or 'relative_position_bias_table' in name)


# ------------------------------------------------------------------ tables
def det_table(arch, schedule, released=False):
    a = ARCHS[arch]
    cfg_src = (DET_1X if schedule == '1x' else DET_3X).format(arch)
    entries = [
        Entry('backbone arch', c('model.backbone.arch'), arch, f'{DET_BACKBONE}:{a["line"]}'),
        Entry('drop path', c('model.backbone.drop_path_rate'), 0.1, f'{cfg_src}:12'),
        Entry('out_indices', c('model.backbone.out_indices'), [0, 1, 2], f'{cfg_src}:13'),
        Entry('stem BN frozen (norm_eval)', c('model.backbone.norm_eval'), True,
              f'{cfg_src}:14 (stem_norm_eval)'),
        Entry('pretrained weights', c('model.backbone.init_cfg.checkpoint'),
              RELEASE + WEIGHTS[arch], f'{cfg_src}:10-11'),
        Entry('neck', c('model.neck'), dict(
            type='LightViTFPN', in_channels=a['widths'], out_channels=256, num_outs=5,
            num_extra_trans_convs=1), f'{cfg_src}:16-22'),
        Entry('optimizer', c('optim_wrapper.optimizer'), dict(
            type='AdamW', lr=2e-4, betas=[0.9, 0.999], weight_decay=0.04),
            f'{cfg_src}:26'),
        Entry('no-decay tensors (backbone, neck)', no_decay_matches_official(det_rule),
              'same tensors', f'{cfg_src}:27-34'),
        Entry('precision, grad clip', c('optim_wrapper.type'), 'OptimWrapper',
              f'{cfg_src}:37-39 (fp32, grad_clip=None)'),
        Entry('images per GPU', c('train_dataloader.batch_size'), 2,
              f'{DET_DATA}:31' if schedule == '1x' else f'{DET_MS}:62'),
        Entry('total batch (auto_scale_lr)', c('auto_scale_lr.base_batch_size'), 16,
              f'{cfg_src}:24 (2 x 8 GPUs)'),
        Entry('warm-up', sched('LinearLR', ['start_factor', 'by_epoch', 'begin', 'end']),
              dict(start_factor=0.001, by_epoch=False, begin=0, end=500),
              f'{cfg_src}:41-45' if schedule == '1x' else f'{cfg_src}:45-49'),
        Entry('epochs', c('train_cfg.max_epochs'), 12 if schedule == '1x' else 36,
              f'{cfg_src}:47' if schedule == '1x' else f'{cfg_src}:51'),
        Entry('lr steps', sched('MultiStepLR', ['milestones', 'gamma']),
              dict(milestones=[8, 11] if schedule == '1x' else [27, 33], gamma=0.1),
              f'{cfg_src}:46' if schedule == '1x' else f'{cfg_src}:50'),
        Entry('test scale', step('Resize', 'test_dataloader.dataset.pipeline',
                                 keys=['scale', 'keep_ratio']),
              dict(scale=[1333, 800], keep_ratio=True),
              f'{DET_DATA}:19' if schedule == '1x' else f'{DET_MS}:51'),
        Entry('RPN test', c('model.test_cfg.rpn'), dict(
            nms_pre=1000, max_per_img=1000, nms=dict(type='nms', iou_threshold=0.7),
            min_bbox_size=0), f'{DET_MODEL}:111-115'),
        Entry('R-CNN test', c('model.test_cfg.rcnn'), dict(
            score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5), max_per_img=100,
            mask_thr_binary=0.5), f'{DET_MODEL}:116-120'),
        Entry('R-CNN sampler', c('model.train_cfg.rcnn.sampler'), dict(
            type='RandomSampler', num=512, pos_fraction=0.25, neg_pos_ub=-1,
            add_gt_as_proposals=True), f'{DET_MODEL}:101-106'),
    ]
    if schedule == '1x':
        entries.append(Entry('train scale, flip', lambda n: [
            step('Resize', keys=['scale', 'keep_ratio'])(n),
            step('RandomFlip', keys=['prob'])(n)],
            [dict(scale=[1333, 800], keep_ratio=True), dict(prob=0.5)], f'{DET_DATA}:8-9'))
    else:
        ms = [[s, 1333] for s in range(480, 801, 32)]
        entries.append(Entry('train multi-scale + crop', lambda n: [
            step('RandomFlip', keys=['prob'])(n),
            [[t['type'], plain(t.get('scales', t.get('crop_size')))] for choice in
             step('RandomChoice')(n)['transforms'] for t in choice]],
            [dict(prob=0.5), [['RandomChoiceResize', ms],
                              ['RandomChoiceResize', [[400, 1333], [500, 1333], [600, 1333]]],
                              ['RandomCrop', [384, 600]], ['RandomChoiceResize', ms]]],
            f'{DET_MS}:9-38'))
    tokens = Entry('global tokens', num_tokens, 512 if arch == 'tiny' else a['tokens'],
                   f'{DET_BACKBONE}:{a["line"] + 2}')
    init = Entry('global token init', token_init, 'zeros' if arch == 'tiny' else 'strict',
                 f'{DET_BACKBONE}:376 + mmcv non-strict load' if arch == 'tiny'
                 else f'{DET_BACKBONE}:376 + {cfg_src}:10-11')
    if arch == 'tiny' and not released:
        tokens.ours, tokens.differs = 8, 'Global tokens (T only): 8'
        init.ours, init.differs = 'strict', 'trains them from zeros'
    entries += [tokens, init]
    return entries


#: the official 19 RandAugment ops with mmpretrain's magnitude ranges (AUG:18-38,
#: mappings AUG:199-277; see the T config's comments for each)
POLICIES = [
    dict(type='Distort', magnitude_range=[10, 20]),
    dict(type='Zoom', magnitude_range=[0, 0.4]),
    dict(type='Blur', magnitude_range=[0, 0.5]),
    dict(type='Skew', magnitude_range=[0, 0.3]),
    dict(type='AutoContrast'), dict(type='Equalize'), dict(type='Invert'),
    dict(type='Rotate', magnitude_range=[0, 30]),
    dict(type='Posterize', magnitude_range=[-1, 3]),
    dict(type='Solarize', magnitude_range=[-1, 255]),
    dict(type='SolarizeAdd', magnitude_range=[0, 110]),
    *[dict(type=t, magnitude_range=[-0.9, 0.9], random_negative_prob=0.)
      for t in ('ColorTransform', 'Contrast', 'Brightness', 'Sharpness')],
    dict(type='Shear', magnitude_range=[0, 0.3], direction='horizontal'),
    dict(type='Shear', magnitude_range=[0, 0.3], direction='vertical'),
    dict(type='Translate', magnitude_range=[0, 0.45], direction='horizontal'),
    dict(type='Translate', magnitude_range=[0, 0.45], direction='vertical'),
]


def cls_table(arch, amp=False):
    a = ARCHS[arch]
    entries = [
        Entry('backbone arch', c('model.backbone.arch'), arch, f'{CLS_MODEL}:494-512'),
        Entry('global tokens', num_tokens, a['tokens'], f'{CLS_MODEL}:494-512'),
        Entry('drop path', c('model.backbone.drop_path_rate'), 0.3 if arch == 'base' else 0.1,
              f'{YAML}:9; LightViT README "set drop_path_rate to 0.3" (B)'),
        Entry('neck width', c('model.neck.out_channels'), 1280, f'{CLS_MODEL}:319 (neck_dim)'),
        Entry('optimizer', c('optim_wrapper.optimizer'), dict(
            type='AdamW', lr=1e-3, betas=[0.9, 0.999], eps=1e-8, weight_decay=0.04),
            f'{YAML}:13,18-20,39'),
        Entry('no-decay tensors (all)', no_decay_matches_official(cls_rule), 'same tensors',
              'cls/lib/utils/optim.py:50-57, ' + f'{CLS_MODEL}:381'),
        Entry('precision', c('optim_wrapper.type'), 'OptimWrapper',
              'cls/tools/train.py:151-152, 281 (GradScaler, no autocast: fp32)',
              ours='AmpOptimWrapper' if amp else None,
              differs='what the authors\' README intends' if amp else None),
        Entry('gradient clipping', c('optim_wrapper.clip_grad'), None, f'{ARGS}:45'),
        Entry('images per GPU, drop_last', lambda n: [c('train_dataloader.batch_size')(n),
                                                      c('train_dataloader.drop_last')(n)],
              [128, True], f'{YAML}:2, cls/lib/dataset/builder.py:75'),
        Entry('epochs', c('train_cfg.max_epochs'), 300, f'{YAML}:11'),
        Entry('warm-up', sched('LinearLR', ['start_factor', 'by_epoch', 'begin', 'end']),
              dict(start_factor=1e-4, by_epoch=True, begin=0, end=20), f'{YAML}:37-38'),
        Entry('cosine', sched('CosineAnnealingLR', ['eta_min', 'begin', 'end',
                                                    'convert_to_iter_based']),
              dict(eta_min=1e-6, begin=20, end=300, convert_to_iter_based=True),
              f'{YAML}:4,14,35'),
        Entry('mixup / cutmix', c('model.train_cfg.augments'),
              [dict(type='Mixup', alpha=0.2), dict(type='CutMix', alpha=1.0)],
              f'{YAML}:29-33'),
        Entry('label smoothing', c('model.head.loss'), dict(
            type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'), f'{ARGS}:29'),
        Entry('random resized crop', step('RandomResizedCrop'), dict(
            type='RandomResizedCrop', scale=224, backend='pillow', interpolation='bicubic'),
            f'{YAML}:22, {TRANS}:19'),
        Entry('RandAugment ops', lambda n: step('RandAugment')(n)['policies'], POLICIES,
              f'{AUG}:18-38, 199-277'),
        Entry('RandAugment m, mstd, n', step('RandAugment', keys=[
            'num_policies', 'magnitude_level', 'magnitude_std', 'total_level', 'hparams']),
            dict(num_policies=2, magnitude_level=9, magnitude_std=0.5, total_level=10,
                 hparams=dict(pad_val=[104, 116, 124], interpolation='bicubic')),
            f'{YAML}:1, {AUG}:16, 441-468, {TRANS}:29-33'),
        Entry('random erasing', step('RandomErasing', keys=[
            'erase_prob', 'mode', 'min_area_ratio', 'max_area_ratio', 'aspect_range']),
            dict(erase_prob=0.25, mode='rand', min_area_ratio=0.02, max_area_ratio=1 / 3,
                 aspect_range=[0.3, 1 / 0.3]), f'{YAML}:25-26, {AUG}:683'),
        Entry('test resize + crop', lambda n: [
            step('ResizeEdge', 'test_dataloader.dataset.pipeline')(n),
            step('CenterCrop', 'test_dataloader.dataset.pipeline')(n)],
            [dict(type='ResizeEdge', scale=256, edge='short', backend='pillow',
                  interpolation='bicubic'), dict(type='CenterCrop', crop_size=224)],
            f'{TRANS}:55-57'),
        Entry('seed', c('randomness'), dict(seed=42, deterministic=False, diff_rank_seed=True),
              f'{YAML}:36, cls/tools/train.py:46 (42 + rank)'),
        Entry('best checkpoint', c('default_hooks.checkpoint.save_best'), 'accuracy/top1',
              'cls/lib/utils/misc.py:80-120 (best.pth.tar by top1)'),
    ]
    return entries


TABLES = {
    'mmdet/mask-rcnn_lightvit-t_lightvit-fpn_1x_coco.py': det_table('tiny', '1x'),
    'mmdet/mask-rcnn_lightvit-s_lightvit-fpn_1x_coco.py': det_table('small', '1x'),
    'mmdet/mask-rcnn_lightvit-b_lightvit-fpn_1x_coco.py': det_table('base', '1x'),
    'mmdet/mask-rcnn_lightvit-t-tok512_lightvit-fpn_1x_coco.py':
        det_table('tiny', '1x', released=True),
    'mmdet/mask-rcnn_lightvit-t_lightvit-fpn_ms-crop-3x_coco.py': det_table('tiny', '3x'),
    'mmdet/mask-rcnn_lightvit-s_lightvit-fpn_ms-crop-3x_coco.py': det_table('small', '3x'),
    'mmdet/mask-rcnn_lightvit-b_lightvit-fpn_ms-crop-3x_coco.py': det_table('base', '3x'),
    'mmpretrain/lightvit-tiny_8xb128_in1k.py': cls_table('tiny'),
    'mmpretrain/lightvit-small_8xb128_in1k.py': cls_table('small'),
    'mmpretrain/lightvit-base_8xb128_in1k.py': cls_table('base'),
    'mmpretrain/lightvit-base_8xb128-amp_in1k.py': cls_table('base', amp=True),
}
CASES = [(name, e) for name, table in TABLES.items() for e in table]


def same(a, b):
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def test_every_paper_config_has_a_table():
    paper = {osp.relpath(p, osp.join(REPO, 'configs')) for p in
             __import__('glob').glob(osp.join(REPO, 'configs', '*', '*.py'))
             if osp.basename(p).startswith(('mask-rcnn', 'lightvit-tiny', 'lightvit-small',
                                            'lightvit-base'))
             and '_amp-' not in p}
    assert len(paper) >= 10, paper
    assert paper <= set(TABLES), sorted(paper - set(TABLES))


@pytest.mark.parametrize('name,entry', CASES, ids=[f'{n.split("/")[1][:-3]}:{e.name}'
                                                   for n, e in CASES])
def test_recipe_value(name, entry):
    got = entry.get(name)
    assert same(got, entry.ours), (
        f'{name}: {entry.name} is {got!r}; the recipe table expects {entry.ours!r} '
        f'(official {entry.official!r}, {entry.source})')
    if entry.differs is None:
        assert same(entry.ours, entry.official), f'{entry.name}: table says ours != official'
    else:
        assert entry.differs in header(name), (
            f'{name}: {entry.name} differs from the official {entry.official!r} '
            f'({entry.source}) but its header does not say {entry.differs!r}')


def test_posterize_and_solarize_ranges_give_the_official_values():
    """mmpretrain's Posterize rounds bits up and Solarize keeps pixels below a
    float threshold; the official ones floor (AUG:244-252): the config's
    ranges must give the official bits and the same inverted pixels."""
    pixels = list(range(256))
    for i in range(1, 1000):
        m = i / 100  # levels 0.01 .. 9.99, never an integer threshold
        if abs(25.6 * m - round(25.6 * m)) < 1e-9:
            continue
        lo, hi = POLICIES[8]['magnitude_range']
        assert math.ceil(lo + m / 10 * (hi - lo)) == int(m / 10 * 4)
        lo, hi = POLICIES[9]['magnitude_range']
        ours = [p < lo + m / 10 * (hi - lo) for p in pixels]
        official = [p < int(m / 10 * 256) for p in pixels]
        assert ours == official, m
        # the enhance ops: mmpretrain's factor 1 + magnitude, official 1.8 m / 10 + 0.1
        lo, hi = POLICIES[11]['magnitude_range']
        assert 1 + lo + m / 10 * (hi - lo) == pytest.approx(m / 10 * 1.8 + 0.1)


def markdown():
    """The tables side by side per family (T / S / B in one row)."""
    families = {
        'Mask R-CNN 1x': [n for n in TABLES if '_1x_coco' in n and 'tok512' not in n],
        'Mask R-CNN 1x, released T (512 tokens)': [n for n in TABLES if 'tok512' in n],
        'Mask R-CNN 3x+ms': [n for n in TABLES if 'ms-crop-3x' in n],
        'ImageNet': [n for n in TABLES if n.endswith('8xb128_in1k.py')],
        'ImageNet B, AMP variant': [n for n in TABLES if '-amp_in1k' in n],
    }

    def fmt(values):
        values = [str(v).replace('|', '/') for v in values]
        return values[0] if len(set(values)) == 1 else ' / '.join(values)

    out = []
    for family, names in families.items():
        out += [f'\n#### {family} ({" / ".join(n.split("/")[1][:-3] for n in names)})\n',
                '| hyper-parameter | official (file:line) | ours | match |',
                '| --- | --- | --- | --- |']
        for i, entry in enumerate(TABLES[names[0]]):
            entries = [TABLES[n][i] for n in names]
            match = ' / '.join('yes' if e.differs is None else f'no ("{e.differs}" in the header)'
                               for e in entries)
            match = match.split(' / ')[0] if len(set(match.split(' / '))) == 1 else match
            out.append(f'| {entry.name} | {fmt(e.official for e in entries)} '
                       f'({fmt(e.source for e in entries)}) | '
                       f'{fmt(e.get(n) for e, n in zip(entries, names))} | {match} |')
    return '\n'.join(out)


if __name__ == '__main__':
    import logging

    from mmengine.logging import MMLogger
    sys.path.insert(0, REPO)
    MMLogger.get_current_instance().setLevel(logging.ERROR)
    print(markdown())

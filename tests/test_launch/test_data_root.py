"""lightvit_mm.launch.data_root: --data-root moves datasets and evaluator
files together, and missing files are named before anything is built."""
import os.path as osp

import pytest
from conftest import REPO, load_tool
from mmengine.config import Config

from lightvit_mm.launch.data_root import check_data_files, set_data_root
from lightvit_mm.launch.prepare import apply_command_line

MASK_RCNN = osp.join(REPO, 'configs/mmdet/mask-rcnn_lightvit-t_lightvit-fpn_1x_coco.py')
UPERNET = osp.join(REPO, 'configs/mmseg/lightvit-t-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py')
IMAGENET = osp.join(REPO, 'configs/mmpretrain/lightvit-tiny_8xb128_in1k.py')
LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


def test_detection_root_moves_datasets_and_evaluators():
    cfg = Config.fromfile(MASK_RCNN)
    assert cfg.val_evaluator.ann_file == 'data/coco/annotations/instances_val2017.json'
    changes = set_data_root(cfg, '/data/my_coco/')
    for loader in LOADERS:
        assert cfg[loader].dataset.data_root == '/data/my_coco/'
    for evaluator in ('val_evaluator', 'test_evaluator'):
        assert cfg[evaluator].ann_file == '/data/my_coco/annotations/instances_val2017.json'
    assert cfg.data_root == '/data/my_coco/'
    assert changes[0] == ('data_root of train_dataloader, val_dataloader, test_dataloader '
                          '-> /data/my_coco/')
    # the datasets' own paths stay relative to the root
    assert cfg.train_dataloader.dataset.ann_file == 'annotations/instances_train2017.json'


@pytest.mark.parametrize('path,old_root', [(UPERNET, 'data/ade/ADEChallengeData2016'),
                                           (IMAGENET, 'data/imagenet')])
def test_segmentation_and_classification_roots_move(path, old_root):
    cfg = Config.fromfile(path)
    assert cfg.val_dataloader.dataset.data_root == old_root
    set_data_root(cfg, '/elsewhere')
    for loader in LOADERS:
        assert cfg[loader].dataset.data_root == '/elsewhere'


def test_wrapped_datasets_and_an_outside_ann_file():
    cfg = Config(dict(
        train_dataloader=dict(dataset=dict(type='RepeatDataset', times=3, dataset=dict(
            type='ConcatDataset', datasets=[dict(data_root='old/', ann_file='a.json'),
                                            dict(data_root='old/', ann_file='b.json')]))),
        val_dataloader=dict(dataset=dict(data_root='old/', ann_file='v.json')),
        val_evaluator=[dict(type='CocoMetric', ann_file='old/v.json'),
                       dict(type='CocoMetric', ann_file='/shared/extra.json')]))
    changes = set_data_root(cfg, 'new')
    inner = cfg.train_dataloader.dataset.dataset.datasets
    assert [d.data_root for d in inner] == ['new', 'new']
    assert [m.ann_file for m in cfg.val_evaluator] == ['new/v.json', '/shared/extra.json']
    assert 'val_evaluator.ann_file /shared/extra.json kept (not under the old root old/)' in changes


def test_cfg_options_win_over_data_root(tmp_path):
    tool = load_tool('tools/train.py')
    args = tool.parse_args([MASK_RCNN, '--data-root', str(tmp_path), '--cfg-options',
                            'val_evaluator.ann_file=/x/val.json'])
    cfg = apply_command_line(Config.fromfile(MASK_RCNN), args, 'train')
    assert cfg.val_dataloader.dataset.data_root == str(tmp_path)
    assert cfg.val_evaluator.ann_file == '/x/val.json'
    assert cfg.test_evaluator.ann_file == osp.join(str(tmp_path),
                                                   'annotations/instances_val2017.json')


def test_check_data_files_names_what_is_missing(tmp_path):
    cfg = Config.fromfile(UPERNET)
    set_data_root(cfg, str(tmp_path))
    (tmp_path / 'images' / 'training').mkdir(parents=True)
    with pytest.raises(FileNotFoundError) as error:
        check_data_files(cfg, ['train_dataloader'])
    message = str(error.value)
    assert f'{tmp_path}/annotations/training (train_dataloader.dataset.data_prefix.' \
           'seg_map_path)' in message
    assert 'images/training' not in message
    (tmp_path / 'annotations' / 'training').mkdir(parents=True)
    check_data_files(cfg, ['train_dataloader'])
    # ImageNet: the split folder and meta/*.txt are what mmpretrain reads
    cfg = Config.fromfile(IMAGENET)
    set_data_root(cfg, str(tmp_path / 'imagenet'))
    with pytest.raises(FileNotFoundError, match=f'{tmp_path}/imagenet/val '):
        check_data_files(cfg, ['test_dataloader'])
    cfg.test_cfg = None  # a loop that is off reads nothing
    check_data_files(cfg, ['test_dataloader'])
    with pytest.raises(KeyError, match='unknown dataloader'):
        check_data_files(cfg, ['val_evaluator'])


def test_bad_data_root():
    with pytest.raises(ValueError, match='needs a folder'):
        set_data_root(Config.fromfile(MASK_RCNN), '')
    with pytest.raises(ValueError, match='no train/val/test dataset'):
        set_data_root(Config(dict(model=dict())), '/data')

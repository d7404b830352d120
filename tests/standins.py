# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""Tiny stand-ins for COCO 2017, ADE20K and ImageNet-1k in their real folder
layouts, made from the digits (:mod:`lightvit_mm.demo_data.digits`).

The paper configs (``configs/mmdet``, ``configs/mmseg``, ``configs/mmpretrain``)
read these folders with their own datasets, pipelines and evaluators, unchanged
but for the data root, so a test can run every paper config end to end on a
machine without the real data:

- :func:`build_coco2017_standin`: ``train2017/``, ``val2017/`` (JPEG files
  named by their 12-digit image id) and
  ``annotations/instances_{train,val}2017.json`` with all 80 COCO category ids
  and names (mmdet's ``CocoDataset`` maps the ids 1..90 with gaps to labels
  0..79); the digit ``k`` is annotated as the ``k``-th COCO category.
- :func:`build_ade20k_standin`: ``images/{training,validation}/*.jpg`` and
  ``annotations/{training,validation}/*.png`` (value 0 = "other", ignored with
  mmseg's ``reduce_zero_label=True``; ``k + 1`` = the digit ``k``, i.e. the
  ``k``-th ADE20K class after the reduction).
- :func:`build_imagenet_standin`: ``train/<wnid>/*.JPEG``, a flat ``val/`` and
  ``meta/{train,val}.txt`` (``path label`` lines) over the first 10 ImageNet
  classes, as mmpretrain's ``ImageNet`` dataset reads them.
"""
import json
import os
import os.path as osp
import shutil
import tempfile
from typing import Dict

from PIL import Image

from lightvit_mm.demo_data.digits import (
    CLASSES,
    _write_json_atomic,
    build_digits_cls,
    build_digits_coco,
)

#: the 80 COCO category ids (1..90 without the 10 ids unused since COCO 2014)
COCO_IDS = tuple(i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83))
#: WordNet ids of ImageNet-1k's first 10 classes (labels 0..9), for the digits 0..9
IMAGENET_WNIDS = ('n01440764', 'n01443537', 'n01484850', 'n01491361', 'n01494475',
                  'n01496331', 'n01498041', 'n01514668', 'n01514859', 'n01518878')


def build_coco2017_standin(out_dir: str, num_train: int = 2, num_val: int = 2,
                           canvas_size: int = 64, seed: int = 0) -> Dict[str, str]:
    """Write a COCO 2017 stand-in (instance segmentation) under ``out_dir``.

    Args:
        out_dir (str): The data root, as ``data/coco/`` in mmdet's configs.
        num_train (int): Images in ``train2017/``. Defaults to 2.
        num_val (int): Images in ``val2017/``. Defaults to 2.
        canvas_size (int): Image side in pixels (at least 32: mmdet's COCO
            configs drop smaller images from training). Defaults to 64.
        seed (int): Random seed of the digits. Defaults to 0.

    Returns:
        dict: split name ('train', 'val') -> path of its annotation file.

    Raises:
        ValueError: a size or count is out of range.
    """
    from mmdet.datasets import CocoDataset
    names = CocoDataset.METAINFO['classes']
    categories = [dict(id=i, name=name, supercategory='none') for i, name in zip(COCO_IDS, names)]
    ann_files = {}
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as staging:
        digits = build_digits_coco(staging, num_train, num_val, canvas_size,
                                   max_digits=3, digit_size=(16, min(30, canvas_size)),
                                   seed=seed)
        os.makedirs(osp.join(out_dir, 'annotations'), exist_ok=True)
        for split, ann_file in digits.items():
            with open(ann_file) as f:
                coco = json.load(f)
            for ann in coco['annotations']:
                ann['category_id'] = COCO_IDS[ann['category_id'] - 1]
            coco['categories'] = categories
            images = osp.join(out_dir, f'{split}2017')
            _replace_dir(None, images)
            for image in coco['images']:  # COCO's names: 12-digit id, JPEG
                name = f'{image["id"]:012d}.jpg'
                Image.open(osp.join(staging, split, image['file_name'])).save(
                    osp.join(images, name), quality=95)
                image['file_name'] = name
            ann_files[split] = osp.join(out_dir, 'annotations', f'instances_{split}2017.json')
            _write_json_atomic(coco, ann_files[split])
    return ann_files


def build_ade20k_standin(out_dir: str, num_train: int = 2, num_val: int = 2,
                         canvas_size: int = 64, seed: int = 0) -> Dict[str, str]:
    """Write an ADE20K stand-in (``ADEChallengeData2016`` layout) under ``out_dir``.

    Args:
        out_dir (str): The data root, as ``data/ade/ADEChallengeData2016`` in
            mmseg's configs.
        num_train (int): Training images. Defaults to 2.
        num_val (int): Validation images. Defaults to 2.
        canvas_size (int): Image side in pixels. Defaults to 64.
        seed (int): Random seed of the digits. Defaults to 0.

    Returns:
        dict: split name ('training', 'validation') -> its image folder.

    Raises:
        ValueError: a size or count is out of range.
    """
    folders = {}
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as staging:
        build_digits_coco(staging, num_train, num_val, canvas_size, max_digits=3,
                          digit_size=(16, min(30, canvas_size)), seed=seed)
        for split, ade_split, prefix in (('train', 'training', 'ADE_train'),
                                         ('val', 'validation', 'ADE_val')):
            images = osp.join(out_dir, 'images', ade_split)
            labels = osp.join(out_dir, 'annotations', ade_split)
            _replace_dir(None, images)
            _replace_dir(osp.join(staging, 'seg_maps', split), labels)
            for name in sorted(os.listdir(labels)):
                stem = f'{prefix}_{int(name[:-4]) + 1:08d}'
                Image.open(osp.join(staging, split, name)).save(
                    osp.join(images, stem + '.jpg'), quality=95)
                os.replace(osp.join(labels, name), osp.join(labels, stem + '.png'))
            folders[ade_split] = images
    return folders


def build_imagenet_standin(out_dir: str, num_train: int = 2, num_val: int = 2,
                           image_size: int = 48, seed: int = 0) -> Dict[str, str]:
    """Write an ImageNet-1k stand-in (mmpretrain's layout with ``meta/``) under ``out_dir``.

    Args:
        out_dir (str): The data root, as ``data/imagenet`` in mmpretrain's configs.
        num_train (int): Training images. Defaults to 2.
        num_val (int): Validation images. Defaults to 2.
        image_size (int): Image side in pixels. Defaults to 48.
        seed (int): Random seed of the digits. Defaults to 0.

    Returns:
        dict: split name ('train', 'val') -> path of its ``meta/<split>.txt``.

    Raises:
        ValueError: a size or count is out of range.
    """
    meta = {}
    os.makedirs(osp.join(out_dir, 'meta'), exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as staging:
        folders = build_digits_cls(staging, num_train, num_val, image_size,
                                   digit_size=(16, min(30, image_size)), seed=seed)
        for split, folder in folders.items():
            _replace_dir(None, osp.join(out_dir, split))
            lines = []
            for label, digit in enumerate(CLASSES):
                for name in sorted(os.listdir(osp.join(folder, digit))):
                    if split == 'train':
                        path = f'{IMAGENET_WNIDS[label]}/{IMAGENET_WNIDS[label]}_{name[:-4]}.JPEG'
                    else:
                        path = f'ILSVRC2012_val_{int(name[:-4]) + 1:08d}.JPEG'
                    os.makedirs(osp.dirname(osp.join(out_dir, split, path)), exist_ok=True)
                    Image.open(osp.join(folder, digit, name)).convert('RGB').save(
                        osp.join(out_dir, split, path), format='JPEG', quality=95)
                    lines.append(f'{path} {label}\n')
            meta[split] = osp.join(out_dir, 'meta', f'{split}.txt')
            tmp = f'{meta[split]}.tmp{os.getpid()}'
            with open(tmp, 'w') as f:
                f.writelines(sorted(lines))
            os.replace(tmp, meta[split])
    return meta


def _replace_dir(src, dst: str):
    """Make ``dst`` the folder ``src`` (moved), or an empty folder when ``src`` is None."""
    if osp.isdir(dst):
        shutil.rmtree(dst)
    if src is None:
        os.makedirs(dst)
    else:
        os.makedirs(osp.dirname(dst), exist_ok=True)
        shutil.move(src, dst)

# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""A small real-image instance segmentation dataset from scanned digits.

The 1,797 handwritten digits that ship with scikit-learn
(``sklearn.datasets.load_digits``: 8x8 scans, values 0-16, from the UCI
"Optical Recognition of Handwritten Digits" set) are scaled up and composed
onto canvases. Each placed digit is one instance of its class ('0'-'9') with
a box and a mask. Train and val canvases draw on disjoint sets of scans, and
everything is deterministic for a seed. :func:`build_digits_coco` writes COCO
format (images as PNG files plus ``annotations/instances_{split}.json`` with
RLE masks), which mmdet's ``CocoDataset`` and ``CocoMetric`` read as they
are, and semantic label maps of the same canvases for mmseg's
``BaseSegDataset``; :func:`build_digits_cls` writes one-digit images in the
class-folder layout of mmpretrain's ``CustomDataset``.
"""
import json
import os
import os.path as osp
from typing import Dict, List, Tuple

import numpy as np
from PIL import Image

CLASSES = tuple(str(i) for i in range(10))
#: classes of the semantic label maps: 0 is the background, k + 1 the digit k
SEG_CLASSES = ('background', ) + CLASSES


def load_digit_scans() -> Tuple[np.ndarray, np.ndarray]:
    """The scikit-learn digit scans as float images in [0, 1] of shape
    (1797, 8, 8) and their labels (1797,), int in [0, 9]."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    return digits.images.astype(np.float32) / 16.0, digits.target.astype(np.int64)


def split_scans(num_scans: int, val_fraction: float, seed: int) -> Dict[str, np.ndarray]:
    """Disjoint index sets {'train': ..., 'val': ...} over ``num_scans`` scans."""
    order = np.random.default_rng(seed).permutation(num_scans)
    num_val = int(round(num_scans * val_fraction))
    return {'val': np.sort(order[:num_val]), 'train': np.sort(order[num_val:])}


def compose_canvas(scans: np.ndarray,
                   labels: np.ndarray,
                   rng: np.random.Generator,
                   canvas_size: int,
                   max_digits: int,
                   digit_size: Tuple[int, int],
                   mask_thr: float = 0.35) -> Tuple[np.ndarray, List[dict]]:
    """Place 1..``max_digits`` random scans on one canvas, without overlap.

    Args:
        scans (np.ndarray): (N, 8, 8) float scans in [0, 1] to draw from.
        labels (np.ndarray): (N,) their classes.
        rng (np.random.Generator): Source of all randomness.
        canvas_size (int): Side of the square canvas, in pixels.
        max_digits (int): Most digits per canvas.
        digit_size (tuple[int, int]): Range of a digit's side, in pixels.
        mask_thr (float): Ink level (0-1) above which a pixel is in the mask.

    Returns:
        tuple: the (canvas_size, canvas_size, 3) uint8 RGB canvas and a list
        of instances ``dict(label, mask (H, W) bool, bbox [x, y, w, h])``.
    """
    background = rng.uniform(0, 60, size=3)
    canvas = np.broadcast_to(background, (canvas_size, canvas_size, 3)).copy()
    occupied = np.zeros((canvas_size, canvas_size), bool)
    instances = []
    for _ in range(rng.integers(1, max_digits + 1)):
        index = rng.integers(len(scans))
        side = int(rng.integers(digit_size[0], digit_size[1] + 1))
        ink = Image.fromarray((scans[index] * 255).astype(np.uint8)).resize(
            (side, side), Image.BILINEAR)
        alpha = np.asarray(ink, np.float32) / 255.0
        for _ in range(20):  # a few tries to find a free spot
            y, x = rng.integers(0, canvas_size - side + 1, size=2)
            if not occupied[max(y - 2, 0):y + side + 2, max(x - 2, 0):x + side + 2].any():
                break
        else:
            continue
        color = rng.uniform(170, 255, size=3)
        region = canvas[y:y + side, x:x + side]
        region[:] = region * (1 - alpha[..., None]) + color * alpha[..., None]
        mask = np.zeros((canvas_size, canvas_size), bool)
        mask[y:y + side, x:x + side] = alpha > mask_thr
        if not mask.any():
            continue
        occupied[y:y + side, x:x + side] = True
        rows, cols = np.nonzero(mask)
        x0, y0 = cols.min(), rows.min()
        bbox = [float(x0), float(y0), float(cols.max() - x0 + 1), float(rows.max() - y0 + 1)]
        instances.append(dict(label=int(labels[index]), mask=mask, bbox=bbox))
    canvas += rng.normal(0, 6, size=canvas.shape)
    return np.clip(canvas, 0, 255).astype(np.uint8), instances


def _write_json_atomic(obj, path: str):
    tmp = f'{path}.tmp{os.getpid()}'
    with open(tmp, 'w') as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def _already_built(out_dir: str, params: dict, files) -> bool:
    """Whether ``out_dir`` holds ``files`` written with the same ``params``."""
    params_file = osp.join(out_dir, 'params.json')
    if not (osp.exists(params_file) and all(map(osp.exists, files))):
        return False
    with open(params_file) as f:
        return json.load(f) == params


def _check_sizes(canvas_size, digit_size, counts):
    if not (digit_size[0] >= 8 and digit_size[0] <= digit_size[1] <= canvas_size):
        raise ValueError(f'digit_size {digit_size} must satisfy 8 <= min <= max <= '
                         f'canvas size ({canvas_size})')
    if min(counts) < 1:
        raise ValueError(f'image counts and max_digits must be >= 1, got {counts}')


def build_digits_coco(out_dir: str,
                      num_train: int = 1000,
                      num_val: int = 100,
                      canvas_size: int = 128,
                      max_digits: int = 4,
                      digit_size: Tuple[int, int] = (20, 40),
                      val_fraction: float = 0.2,
                      seed: int = 0) -> Dict[str, str]:
    """Write the digits instance segmentation dataset in COCO format.

    Layout: ``out_dir/{train,val}/NNNNNN.png``,
    ``out_dir/annotations/instances_{train,val}.json`` (category ids 1-10 for
    the digits '0'-'9', RLE masks) and ``out_dir/seg_maps/{train,val}/
    NNNNNN.png`` (uint8 label maps over :data:`SEG_CLASSES`). A folder
    already built with the same arguments is left as it is.

    Args:
        out_dir (str): Destination folder.
        num_train (int): Train canvases. Defaults to 1000.
        num_val (int): Val canvases. Defaults to 100.
        canvas_size (int): Canvas side in pixels. Defaults to 128.
        max_digits (int): Most digits per canvas. Defaults to 4.
        digit_size (tuple[int, int]): Range of a digit's side in pixels.
            Defaults to (20, 40).
        val_fraction (float): Share of the scans kept for val. Defaults to 0.2.
        seed (int): Random seed. Defaults to 0.

    Returns:
        dict: split name -> path of its annotation file.

    Raises:
        ValueError: a size or count is out of range.
    """
    from pycocotools import mask as mask_utils
    _check_sizes(canvas_size, digit_size, (num_train, num_val, max_digits))
    params = dict(kind='coco+seg', num_train=num_train, num_val=num_val,
                  canvas_size=canvas_size, max_digits=max_digits,
                  digit_size=list(digit_size), val_fraction=val_fraction, seed=seed)
    ann_dir = osp.join(out_dir, 'annotations')
    ann_files = {s: osp.join(ann_dir, f'instances_{s}.json') for s in ('train', 'val')}
    if _already_built(out_dir, params, ann_files.values()):
        return ann_files

    scans, labels = load_digit_scans()
    pools = split_scans(len(scans), val_fraction, seed)
    os.makedirs(ann_dir, exist_ok=True)
    categories = [dict(id=i + 1, name=name) for i, name in enumerate(CLASSES)]
    for split_index, (split, count) in enumerate((('train', num_train), ('val', num_val))):
        rng = np.random.default_rng([seed, split_index])
        pool = pools[split]
        os.makedirs(osp.join(out_dir, split), exist_ok=True)
        os.makedirs(osp.join(out_dir, 'seg_maps', split), exist_ok=True)
        images, annotations = [], []
        for image_id in range(count):
            canvas, instances = compose_canvas(scans[pool], labels[pool], rng, canvas_size,
                                               max_digits, digit_size)
            file_name = f'{image_id:06d}.png'
            Image.fromarray(canvas).save(osp.join(out_dir, split, file_name))
            images.append(dict(id=image_id, file_name=file_name,
                               height=canvas_size, width=canvas_size))
            label_map = np.zeros((canvas_size, canvas_size), np.uint8)
            for inst in instances:
                label_map[inst['mask']] = inst['label'] + 1
            Image.fromarray(label_map).save(osp.join(out_dir, 'seg_maps', split, file_name))
            for inst in instances:
                rle = mask_utils.encode(np.asfortranarray(inst['mask'].astype(np.uint8)))
                rle['counts'] = rle['counts'].decode('ascii')
                annotations.append(dict(
                    id=len(annotations) + 1, image_id=image_id,
                    category_id=inst['label'] + 1, bbox=inst['bbox'],
                    area=float(inst['mask'].sum()), segmentation=rle, iscrowd=0))
        _write_json_atomic(dict(images=images, annotations=annotations,
                                categories=categories), ann_files[split])
    _write_json_atomic(params, osp.join(out_dir, 'params.json'))
    return ann_files


def build_digits_cls(out_dir: str,
                     num_train: int = 3000,
                     num_val: int = 500,
                     image_size: int = 48,
                     digit_size: Tuple[int, int] = (20, 40),
                     val_fraction: float = 0.2,
                     seed: int = 0) -> Dict[str, str]:
    """Write one-digit images in mmpretrain's ``CustomDataset`` folder layout.

    Each image is a canvas (as in :func:`build_digits_coco`, same scan split
    for the same ``val_fraction`` and ``seed``) holding one scan, so a model
    pretrained on it has seen the detection canvases' kind of image. Layout:
    ``out_dir/{train,val}/<digit>/NNNNNN.png``. A folder already built with
    the same arguments is left as it is.

    Args:
        out_dir (str): Destination folder.
        num_train (int): Train images. Defaults to 3000.
        num_val (int): Val images. Defaults to 500.
        image_size (int): Image side in pixels. Defaults to 48.
        digit_size (tuple[int, int]): Range of the digit's side in pixels.
            Defaults to (20, 40).
        val_fraction (float): Share of the scans kept for val. Defaults to 0.2.
        seed (int): Random seed. Defaults to 0.

    Returns:
        dict: split name -> its folder.

    Raises:
        ValueError: a size or count is out of range.
    """
    _check_sizes(image_size, digit_size, (num_train, num_val))
    params = dict(kind='cls', num_train=num_train, num_val=num_val, image_size=image_size,
                  digit_size=list(digit_size), val_fraction=val_fraction, seed=seed)
    folders = {s: osp.join(out_dir, s) for s in ('train', 'val')}
    if _already_built(out_dir, params, folders.values()):
        return folders
    scans, labels = load_digit_scans()
    pools = split_scans(len(scans), val_fraction, seed)
    for split_index, (split, count) in enumerate((('train', num_train), ('val', num_val))):
        rng = np.random.default_rng([seed, split_index, 1])
        pool = pools[split]
        for name in CLASSES:
            os.makedirs(osp.join(folders[split], name), exist_ok=True)
        for image_id in range(count):
            image, (instance, ) = compose_canvas(scans[pool], labels[pool], rng, image_size,
                                                 1, digit_size)
            Image.fromarray(image).save(
                osp.join(folders[split], CLASSES[instance['label']], f'{image_id:06d}.png'))
    _write_json_atomic(params, osp.join(out_dir, 'params.json'))
    return folders

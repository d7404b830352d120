import json
import os.path as osp

import numpy as np
from PIL import Image

from lightvit_mm.demo_data.digits import build_digits_coco, load_digit_scans, split_scans


def test_scan_split_is_disjoint_and_complete():
    scans, labels = load_digit_scans()
    assert scans.shape == (1797, 8, 8) and 0 <= scans.min() and scans.max() <= 1
    pools = split_scans(len(scans), 0.2, seed=0)
    assert len(pools['val']) == 359
    assert not set(pools['train']) & set(pools['val'])
    assert len(pools['train']) + len(pools['val']) == 1797


def test_coco_dataset_is_valid_and_deterministic(tmp_path):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    files_a = build_digits_coco(str(tmp_path / 'a'), num_train=6, num_val=3, seed=3)
    files_b = build_digits_coco(str(tmp_path / 'b'), num_train=6, num_val=3, seed=3)
    for split in ('train', 'val'):
        with open(files_a[split]) as fa, open(files_b[split]) as fb:
            assert json.load(fa) == json.load(fb)
        coco = COCO(files_a[split])
        assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == [str(i) for i in range(10)]
        assert len(coco.getImgIds()) == (6 if split == 'train' else 3)
        assert len(coco.getAnnIds()) >= len(coco.getImgIds())
        for ann in coco.loadAnns(coco.getAnnIds()):
            mask = mask_utils.decode(ann['segmentation'])
            x, y, w, h = ann['bbox']
            ys, xs = np.nonzero(mask)
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x, y, x + w, y + h)
            assert ann['area'] == mask.sum()
        image = coco.loadImgs(0)[0]
        pixels = np.asarray(Image.open(osp.join(tmp_path, 'a', split, image['file_name'])))
        assert pixels.shape == (128, 128, 3)
    other = build_digits_coco(str(tmp_path / 'c'), num_train=6, num_val=3, seed=4)
    with open(files_a['train']) as fa, open(other['train']) as fc:
        assert json.load(fa) != json.load(fc)

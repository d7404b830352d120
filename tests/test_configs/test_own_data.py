"""docs/own_data.md: the config it shows is the repository's file, and that
file trains (2 iterations) and evaluates on the digits as "own" data, moved
there with ``tools/train.py --data-root``."""
import os.path as osp
import re

from conftest import REPO
from test_paper_configs import NO_DOWNLOAD, train_and_validate

CONFIG = 'configs/mmdet/digits/mask-rcnn_lightvit-t_lightvit-fpn_1x_own-data.py'
PAGE = osp.join(REPO, 'docs', 'own_data.md')


def test_page_shows_the_config_file():
    with open(PAGE) as f:
        page = f.read()
    with open(osp.join(REPO, CONFIG)) as f:
        config = f.read()
    assert CONFIG in page
    assert config in re.findall(r'```python\n(.*?)```', page, re.S)


def test_own_data_config_trains_and_evaluates(tiny_digits, tmp_path):
    # The inherited 1x pipeline (resize to 1333x800) runs in
    # test_paper_configs.py; here images are resized to 128x128 (CPU time).
    runner, scores, _ = train_and_validate(
        CONFIG, tiny_digits, tmp_path,
        [NO_DOWNLOAD, 'train_dataloader.batch_size=1', 'train_dataloader.dataset.indices=2',
         'train_cfg.max_epochs=1', 'model.test_cfg.rcnn.score_thr=0',
         'train_dataloader.dataset.pipeline.2.scale=(128,128)',
         'val_dataloader.dataset.pipeline.1.scale=(128,128)'])
    assert runner.iter == 2
    assert 0 <= scores['coco/bbox_mAP'] <= 1 and 0 <= scores['coco/segm_mAP'] <= 1

"""Training with fewer GPUs than the paper (docs/training.md): ``--auto-scale-lr``
scales the learning rate by the images of one optimizer step, and
``optim_wrapper.accumulative_counts=K`` makes one optimizer step per K
iterations, on the digits classification config (AdamW lr 1e-3 for a batch
of 1024, the ImageNet recipe's)."""
import os.path as osp

import pytest
from conftest import CLS_DIGITS_CONFIG, REPO, load_tool, tiny_cls_options
from mmengine.config import Config

CONFIG_LR = 1e-3
BASE_BATCH = 1024
BATCH = 2  # tiny_cls_options, one process
MAX_ITERS = 2


def train(data_root, work_dir, *options):
    runner = load_tool('tools/train.py').main(
        [CLS_DIGITS_CONFIG, '--work-dir', str(work_dir), '--auto-scale-lr', '--cfg-options',
         *tiny_cls_options(data_root, max_iters=MAX_ITERS), *options])
    optimizer = runner.optim_wrapper.optimizer
    lrs = [group['initial_lr'] for group in optimizer.param_groups]  # before the schedule
    steps = {int(state['step']) for state in optimizer.state.values()}  # AdamW's counters
    return lrs, steps


@pytest.mark.parametrize('counts', [1, 2])
def test_auto_scale_lr_and_accumulation(tiny_digits_cls, tmp_path, counts):
    options = [f'optim_wrapper.accumulative_counts={counts}'] if counts > 1 else []
    lrs, steps = train(tiny_digits_cls, tmp_path, *options)
    # Images per optimizer step: batch x processes x K.
    assert lrs == pytest.approx([CONFIG_LR * BATCH * counts / BASE_BATCH] * len(lrs))
    assert steps == {MAX_ITERS // counts}


@pytest.mark.parametrize('config,base_batch', [
    ('configs/mmdet/mask-rcnn_lightvit-t_lightvit-fpn_1x_coco.py', 16),  # mmdet's schedule
    ('configs/mmseg/lightvit-t-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py', 16),  # 8 x 2
    ('configs/mmpretrain/lightvit-tiny_8xb128_in1k.py', 1024),  # 8 x 128
])
def test_paper_configs_name_their_batch(config, base_batch):
    """The S and B configs (and the digits ones) inherit these."""
    cfg = Config.fromfile(osp.join(REPO, config))
    assert cfg.auto_scale_lr.base_batch_size == base_batch
    assert not cfg.auto_scale_lr.get('enable', False)  # off unless --auto-scale-lr

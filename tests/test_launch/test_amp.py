"""Mixed precision: the AMP digits configs train under mmengine's AmpOptimWrapper.

AmpOptimWrapper refuses to start without a GPU/NPU/MLU/MUSA; CI has none, so
the test lets it start on the CPU (its device check patched), where mmengine's
``autocast`` accepts only bf16 (the config's fp16 needs a GPU) and torch's
CUDA GradScaler disables itself (no loss scaling). What it shows: the config
builds the wrapper, the backbone really computes in bf16, and a few
iterations give finite losses and finite weights. It runs the UPerNet config:
the Mask R-CNN one stops on the CPU in mmcv's NMS, which has no bf16 kernel
(``expected scalar type Float but found BFloat16``); on a GPU it runs fp16.
"""
import argparse
import math
import os.path as osp

import torch
from conftest import NO_EVAL_OPTIONS, REPO, TINY_CANVAS, read_scalars
from mmengine.config import Config, DictAction

AMP_CONFIG = osp.join(REPO, 'configs/mmseg/digits/lightvit-t_upernet_amp_digits.py')
#: the second iteration runs on the weights the first bf16 step wrote
MAX_ITERS = 2


def cfg_with_options(path, options):
    parser = argparse.ArgumentParser()
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    cfg = Config.fromfile(path)
    cfg.merge_from_dict(parser.parse_args(['--cfg-options', *options]).cfg_options)
    return cfg


def test_amp_digits_config_trains_without_nans_in_bf16(tiny_digits, tmp_path, monkeypatch):
    from mmengine.optim import AmpOptimWrapper
    from mmengine.optim.optimizer import amp_optimizer_wrapper
    from mmengine.runner import Runner

    monkeypatch.setattr(amp_optimizer_wrapper, 'is_cuda_available', lambda: True)
    cfg = cfg_with_options(AMP_CONFIG, [
        f'train_dataloader.dataset.data_root={tiny_digits}/', 'train_dataloader.batch_size=2',
        'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
        f'model.data_preprocessor.size=({TINY_CANVAS},{TINY_CANVAS})',
        *NO_EVAL_OPTIONS,
        f'train_cfg.max_iters={MAX_ITERS}', f'train_cfg.val_interval={MAX_ITERS}',
        'default_hooks.logger.interval=1', f'default_hooks.checkpoint.interval={MAX_ITERS}',
        'param_scheduler.0.end=1', 'param_scheduler.1.begin=1',
        f'param_scheduler.1.end={MAX_ITERS}',
        'optim_wrapper.dtype=bfloat16'])
    cfg.work_dir = str(tmp_path)
    runner = Runner.from_cfg(cfg)

    dtypes = set()
    qkv = runner.model.backbone.stages[-1][-1].attn.qkv
    qkv.register_forward_hook(lambda module, args, out: dtypes.add(out.dtype))
    runner.train()

    assert isinstance(runner.optim_wrapper, AmpOptimWrapper)
    assert dtypes == {torch.bfloat16}
    losses = [r['loss'] for r in read_scalars(tmp_path)]
    assert len(losses) == MAX_ITERS and all(math.isfinite(loss) for loss in losses), losses
    assert all(torch.isfinite(p).all() for p in runner.model.parameters())

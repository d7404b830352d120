"""Several processes: ``tools/dist_train.sh`` on a machine without a GPU
(gloo instead of nccl, chosen by ``lightvit_mm.launch.distributed.setup_distributed``
in ``tools/train.py``)."""
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from conftest import DIST_ITERS, REPO, free_port, read_scalars
from mmengine.config import Config
from mmengine.logging import MMLogger

from lightvit_mm.launch.distributed import setup_distributed


@pytest.mark.skipif(torch.cuda.is_available(), reason='tests the no-GPU path (gloo)')
def test_dist_train_two_processes_on_cpu(digits_dist_run):
    """The session's run of ``tools/dist_train.sh`` with 2 processes
    (conftest.digits_dist_run, also the reference of test_multinode)."""
    work_dir, output = digits_dist_run['work_dir'], digits_dist_run['output']
    assert digits_dist_run['code'] == 0, output[-5000:]
    # Two ranks took part, over gloo ...
    assert 'Distributed training: True' in output
    assert 'GPU number: 2' in output  # mmengine's name for the world size
    assert "dist_cfg=dict(backend='gloo')" in output
    # ... only rank 0 logged the training lines and wrote files.
    train_lines = [line for line in output.splitlines() if 'Iter(train)' in line]
    assert len(train_lines) == DIST_ITERS, '\n'.join(train_lines)
    assert [r['iter'] for r in read_scalars(work_dir)] == list(range(1, DIST_ITERS + 1))
    assert sorted(p.name for p in work_dir.glob('*.pth')) == [f'iter_{DIST_ITERS}.pth']
    assert (work_dir / 'last_checkpoint').read_text().strip().endswith(f'iter_{DIST_ITERS}.pth')


def test_setup_distributed_without_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    cfg = Config(dict(launcher='none', env_cfg=dict(dist_cfg=dict(backend='nccl'))))
    assert setup_distributed(cfg) == 'none'
    assert cfg.env_cfg.dist_cfg.backend == 'nccl' and 'model_wrapper_cfg' not in cfg
    # pytorch launcher (process group already there): the config is fixed.
    # The logger that setup_distributed prints to exists before the process
    # group is faked (a new MMLogger would ask the missing group for its rank).
    MMLogger.get_current_instance()
    monkeypatch.setattr(torch.distributed, 'is_initialized', lambda: True)
    cfg = Config(dict(launcher='pytorch', sync_bn='torch',
                      env_cfg=dict(dist_cfg=dict(backend='nccl', timeout=60))))
    assert setup_distributed(cfg) == 'gloo'
    assert cfg.env_cfg.dist_cfg == dict(backend='gloo', timeout=60)
    assert cfg.model_wrapper_cfg.type == 'CPUDistributedDataParallel'
    assert cfg.model_wrapper_cfg.device_ids is None
    assert cfg.sync_bn is None
    # A wrapper of the config keeps its own settings.
    cfg = Config(dict(launcher='pytorch', model_wrapper_cfg=dict(
        type='MMDistributedDataParallel', find_unused_parameters=True, device_ids=[0])))
    setup_distributed(cfg)
    assert cfg.model_wrapper_cfg.device_ids == [0] and cfg.model_wrapper_cfg.find_unused_parameters
    # With a GPU the config's backend stays.
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    cfg = Config(dict(launcher='pytorch', env_cfg=dict(dist_cfg=dict(backend='nccl'))))
    assert setup_distributed(cfg) == 'nccl'
    assert 'model_wrapper_cfg' not in cfg


UPERNET = 'configs/mmseg/lightvit-t-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py'


@pytest.mark.skipif(torch.cuda.is_available(), reason='tests the no-GPU path (gloo)')
def test_upernet_paper_config_two_cpu_processes_train_and_test(standins, tmp_path):
    """The UPerNet paper config (SyncBN in its heads) trains 2 iterations and
    tests with 2 CPU processes: SyncBN is reverted to BN, with a log line.

    Its pipeline at full size runs in test_paper_configs.py; here the
    inputs are 128x128 (crop, padding, test resize) to keep the two
    processes' CPU time low. Batch 2 per process, as in the config: the
    pyramid pooling's 1x1 BN needs more than one image per process."""
    work_dir = tmp_path / 'work'
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(free_port()))
    common = ['--data-root', standins['ade'], '--work-dir', str(work_dir), '--cfg-options',
              'model.backbone.init_cfg=None', 'model.data_preprocessor.size=(128,128)',
              'test_dataloader.dataset.pipeline.1.scale=(512,128)',
              'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False']
    train = subprocess.run(
        ['bash', osp.join(REPO, 'tools/dist_train.sh'), osp.join(REPO, UPERNET), '2', *common,
         'train_dataloader.dataset.pipeline.2.scale=(512,128)',
         'train_dataloader.dataset.pipeline.3.crop_size=(128,128)',
         'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
         'train_cfg.max_iters=2', 'train_cfg.val_interval=1000'],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    output = train.stdout + train.stderr
    assert train.returncode == 0, output[-5000:]
    assert 'GPU number: 2' in output
    assert 'SyncBN layers reverted to BN' in output
    assert 'Saving checkpoint at 2 iterations' in output
    test = subprocess.run(
        ['bash', osp.join(REPO, 'tools/dist_test.sh'), osp.join(REPO, UPERNET),
         str(work_dir / 'iter_2.pth'), '2', *common],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    output = test.stdout + test.stderr
    assert test.returncode == 0, output[-5000:]
    assert 'SyncBN layers reverted to BN' in output
    (line, ) = [line for line in output.splitlines() if 'Iter(test)' in line and 'mIoU' in line]
    assert 0 <= float(line.split('mIoU:')[1].split()[0]) <= 100

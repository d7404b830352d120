"""tools/train.py stops before building anything when the machine cannot run
the config: mixed precision (AmpOptimWrapper) or the slurm/mpi launchers
without a GPU, naming what to do instead."""
import os.path as osp

import pytest
import torch
from conftest import REPO, load_tool
from mmengine.config import Config
from mmengine.optim import OptimWrapper, build_optim_wrapper

from lightvit_mm.launch.amp import check_amp
from lightvit_mm.launch.distributed import setup_distributed

AMP_CONFIG = osp.join(REPO, 'configs/mmdet/mask-rcnn_lightvit-t_lightvit-fpn_amp-1x_coco.py')
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason='tests a machine without a GPU')


@no_gpu
def test_amp_config_without_gpu_stops_before_any_dataset(tmp_path):
    tool = load_tool('tools/train.py')
    # The data root does not exist: the AMP check comes before the data check
    # (and before the Runner builds datasets and model).
    with pytest.raises(RuntimeError) as error:
        tool.main([AMP_CONFIG, '--data-root', str(tmp_path / 'none'),
                   '--work-dir', str(tmp_path / 'work')])
    message = str(error.value)
    assert "optim_wrapper.type='AmpOptimWrapper'" in message
    assert '--cfg-options optim_wrapper.type=OptimWrapper' in message
    assert not (tmp_path / 'work').exists()


def test_amp_config_made_fp32_loses_amp_arguments():
    cfg = Config.fromfile(AMP_CONFIG)
    cfg.merge_from_dict({'optim_wrapper.type': 'OptimWrapper'})
    assert cfg.optim_wrapper.loss_scale == 'dynamic'  # OptimWrapper would raise a TypeError
    check_amp(cfg)
    assert 'loss_scale' not in cfg.optim_wrapper and cfg.optim_wrapper.type == 'OptimWrapper'
    wrapper = build_optim_wrapper(torch.nn.Linear(2, 2), cfg.optim_wrapper)
    assert type(wrapper) is OptimWrapper and type(wrapper.optimizer) is torch.optim.AdamW


@no_gpu
@pytest.mark.parametrize('launcher', ['slurm', 'mpi'])
def test_gpu_launchers_refused_without_gpu(launcher):
    cfg = Config(dict(launcher=launcher, env_cfg=dict(dist_cfg=dict(backend='nccl'))))
    with pytest.raises(RuntimeError, match='tools/dist_train.sh CONFIG N'):
        setup_distributed(cfg)
    assert cfg.env_cfg.dist_cfg.backend == 'nccl'  # untouched

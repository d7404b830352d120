# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""Distributed runs on machines without a GPU, for ``tools/train.py`` and
``tools/test.py``.

OpenMMLab's runtime configs ask for the ``nccl`` backend, which needs CUDA,
and mmengine 0.10.7's launchers call ``torch.cuda.set_device(LOCAL_RANK)``
and wrap the model in DDP with ``device_ids=[LOCAL_RANK]``, both of which fail
without a GPU; DDP also refuses CPU modules holding SyncBN layers (``ValueError:
SyncBatchNorm layers only work with GPU modules``), which mmseg's configs put
in their heads. :func:`setup_distributed` switches such a run to ``gloo`` and
to :class:`CPUDistributedDataParallel`, which reverts SyncBN to BN.
"""
import datetime
import os

import torch
import torch.distributed as dist
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.model import MMDistributedDataParallel, revert_sync_batchnorm
from mmengine.registry import MODEL_WRAPPERS
from torch import nn
from torch.nn.parallel import DistributedDataParallel


@MODEL_WRAPPERS.register_module()
class CPUDistributedDataParallel(MMDistributedDataParallel):
    """mmengine's ``MMDistributedDataParallel`` for CPU processes (gloo): SyncBN
    layers become BN first.

    PyTorch's ``SyncBatchNorm`` (and mmcv's) only runs on GPUs, and DDP refuses
    a CPU module holding one. mmengine reverts SyncBN with
    :func:`mmengine.model.revert_sync_batchnorm` in single-process runs; this
    wrapper does the same in distributed CPU runs and logs how many layers it
    changed. Batch statistics are then per process: a BN layer in training
    needs more than one value per channel, so a head that pools to 1x1 (the
    PPM of UPerNet, pool scale 1) needs at least 2 images per process.

    Args:
        module (nn.Module): The model (on the CPU).
        **kwargs: Passed to ``MMDistributedDataParallel``
            (``device_ids`` must be None for a CPU module).
    """

    def __init__(self, module: nn.Module, **kwargs):
        synced = [name for name, m in module.named_modules()
                  if 'SyncBatchNorm' in type(m).__name__]
        if synced:
            module = revert_sync_batchnorm(module)
            print_log(f'CPU processes (gloo): {len(synced)} SyncBN layers reverted to BN '
                      f'(batch statistics per process), e.g. {synced[0]}', logger='current')
        super().__init__(module=module, **kwargs)


def setup_distributed(cfg: Config) -> str:
    """Prepare ``cfg`` (and, without a GPU, the process group) for its launcher.

    With ``cfg.launcher == 'none'`` or a GPU, nothing changes: the config's
    ``env_cfg.dist_cfg.backend`` (``nccl`` in the OpenMMLab runtimes) is used.
    Without a GPU and with the ``pytorch`` launcher (``torch.distributed.run``,
    as ``tools/dist_train.sh``, which sets ``RANK``, ``WORLD_SIZE``,
    ``MASTER_ADDR`` and ``MASTER_PORT``):

    - ``env_cfg.dist_cfg.backend`` becomes ``'gloo'``;
    - mmengine's default wrapper ``MMDistributedDataParallel`` becomes
      :class:`CPUDistributedDataParallel` (SyncBN reverted to BN), and a DDP
      wrapper gets ``device_ids=None`` (a CPU module) unless
      ``model_wrapper_cfg`` sets them (mmengine's default is
      ``[LOCAL_RANK]``, a GPU); ``cfg.sync_bn`` (BN to SyncBN) is dropped;
    - the process group is initialised here, with the config's ``timeout``
      (seconds); the Runner then uses it instead of calling mmengine's
      ``init_dist``.

    Args:
        cfg (Config): The full config, with ``launcher`` set.

    Returns:
        str: The backend the run will use (``'none'`` when not distributed).

    Raises:
        RuntimeError: the ``slurm`` or ``mpi`` launcher without a GPU
            (mmengine's ``init_dist`` for them calls ``torch.cuda.set_device``);
            raised before anything is built.
    """
    launcher = cfg.get('launcher', 'none')
    env_cfg = cfg.get('env_cfg') or {}
    dist_cfg = dict(env_cfg.get('dist_cfg') or {})
    if launcher == 'none':
        return 'none'
    if torch.cuda.is_available():
        return dist_cfg.get('backend', 'nccl')
    if launcher != 'pytorch':
        raise RuntimeError(
            f'--launcher {launcher} needs a GPU (mmengine\'s init_dist for it calls '
            'torch.cuda.set_device) and this machine has none. On CPUs, start several '
            'processes with torch.distributed.run: tools/dist_train.sh CONFIG N '
            '(--launcher pytorch, gloo), or train in one process with --launcher none.')
    dist_cfg['backend'] = 'gloo'
    env_cfg['dist_cfg'] = dist_cfg
    cfg.env_cfg = env_cfg
    wrapper = cfg.get('model_wrapper_cfg') or dict(
        type='MMDistributedDataParallel', broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False))
    wrapper_type = wrapper.get('type', 'MMDistributedDataParallel')
    if isinstance(wrapper_type, str):
        wrapper_type = MODEL_WRAPPERS.get(wrapper_type)
    if wrapper_type is MMDistributedDataParallel:
        wrapper['type'] = CPUDistributedDataParallel.__name__
        wrapper_type = CPUDistributedDataParallel
    if isinstance(wrapper_type, type) and issubclass(wrapper_type, DistributedDataParallel):
        wrapper.setdefault('device_ids', None)  # mmengine's default [LOCAL_RANK] is a GPU
    cfg.model_wrapper_cfg = wrapper
    if cfg.get('sync_bn'):
        print_log(f'CPU processes (gloo): sync_bn={cfg.sync_bn!r} ignored (SyncBN needs a GPU)',
                  logger='current')
        cfg.sync_bn = None
    if not dist.is_initialized():
        kwargs = {}
        if dist_cfg.get('timeout') is not None:
            kwargs['timeout'] = datetime.timedelta(seconds=dist_cfg['timeout'])
        dist.init_process_group(backend='gloo', rank=int(os.environ['RANK']),
                                world_size=int(os.environ['WORLD_SIZE']), **kwargs)
    return 'gloo'

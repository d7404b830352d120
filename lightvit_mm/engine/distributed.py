# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""Distributed runs on machines without a GPU, for ``tools/train.py`` and
``tools/test.py``.

OpenMMLab's runtime configs ask for the ``nccl`` backend, which needs CUDA,
and mmengine 0.10.7's launchers call ``torch.cuda.set_device(LOCAL_RANK)``
and wrap the model in DDP with ``device_ids=[LOCAL_RANK]``, both of which fail
without a GPU. :func:`setup_distributed` switches such a run to ``gloo``.
"""
import datetime
import os

import torch
import torch.distributed as dist
from mmengine.config import Config
from mmengine.registry import MODEL_WRAPPERS
from torch.nn.parallel import DistributedDataParallel


def setup_distributed(cfg: Config) -> str:
    """Prepare ``cfg`` (and, without a GPU, the process group) for its launcher.

    With ``cfg.launcher == 'none'`` or a GPU, nothing changes: the config's
    ``env_cfg.dist_cfg.backend`` (``nccl`` in the OpenMMLab runtimes) is used.
    Without a GPU and with a launcher:

    - ``env_cfg.dist_cfg.backend`` becomes ``'gloo'``;
    - a DDP wrapper gets ``device_ids=None`` (a CPU module) unless
      ``model_wrapper_cfg`` sets them (mmengine's default is
      ``[LOCAL_RANK]``, a GPU);
    - for the ``pytorch`` launcher (``torch.distributed.run``, which sets
      ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``), the
      process group is initialised here, with the config's ``timeout``
      (seconds); the Runner then uses it instead of calling mmengine's
      ``init_dist``. The ``slurm`` and ``mpi`` launchers still go through
      mmengine, which needs a GPU.

    Args:
        cfg (Config): The full config, with ``launcher`` set.

    Returns:
        str: The backend the run will use (``'none'`` when not distributed).
    """
    launcher = cfg.get('launcher', 'none')
    env_cfg = cfg.get('env_cfg') or {}
    dist_cfg = dict(env_cfg.get('dist_cfg') or {})
    if launcher == 'none':
        return 'none'
    if torch.cuda.is_available():
        return dist_cfg.get('backend', 'nccl')
    dist_cfg['backend'] = 'gloo'
    env_cfg['dist_cfg'] = dist_cfg
    cfg.env_cfg = env_cfg
    wrapper = cfg.get('model_wrapper_cfg') or dict(
        type='MMDistributedDataParallel', broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False))
    wrapper_type = wrapper.get('type', 'MMDistributedDataParallel')
    if isinstance(wrapper_type, str):
        wrapper_type = MODEL_WRAPPERS.get(wrapper_type)
    if isinstance(wrapper_type, type) and issubclass(wrapper_type, DistributedDataParallel):
        wrapper.setdefault('device_ids', None)  # mmengine's default [LOCAL_RANK] is a GPU
    cfg.model_wrapper_cfg = wrapper
    if launcher == 'pytorch' and not dist.is_initialized():
        kwargs = {}
        if dist_cfg.get('timeout') is not None:
            kwargs['timeout'] = datetime.timedelta(seconds=dist_cfg['timeout'])
        dist.init_process_group(backend='gloo', rank=int(os.environ['RANK']),
                                world_size=int(os.environ['WORLD_SIZE']), **kwargs)
    return 'gloo'

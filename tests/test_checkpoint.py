import collections
import pickle

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer, MessageHub

from lightvit_mm.utils.checkpoint import safe_mmengine_checkpoints


def test_mmengine_checkpoint_loads_with_weights_only(tmp_path):
    hub = MessageHub.get_instance('lightvit_mm_test')
    hub.update_scalar('train/loss', 1.5)
    hub.update_info('iter', np.int64(3))
    ckpt = dict(meta=dict(iter=3, message_hub=hub.state_dict(),
                          seed=np.int64(1), arr=np.arange(3, dtype=np.float32)),
                state_dict=collections.OrderedDict(w=torch.ones(2)))
    path = tmp_path / 'iter_3.pth'
    torch.save(ckpt, path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path)  # torch >= 2.6 default: weights_only=True
    with safe_mmengine_checkpoints():
        loaded = torch.load(path)
    assert torch.equal(loaded['state_dict']['w'], torch.ones(2))
    buffer = loaded['meta']['message_hub']['log_scalars']['train/loss']
    assert isinstance(buffer, HistoryBuffer) and buffer.current() == 1.5


class NotAllowed:
    pass


def test_other_globals_still_refused(tmp_path):
    path = tmp_path / 'evil.pth'
    torch.save({'obj': NotAllowed()}, path)
    with safe_mmengine_checkpoints(), pytest.raises(pickle.UnpicklingError,
                                                    match='NotAllowed'):
        torch.load(path)

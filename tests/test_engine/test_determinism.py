"""Determinism: two training runs of the digits config with
``randomness=dict(seed=0, deterministic=True)`` log identical losses and
write identical weights.

The two runs are the session's (conftest.digits_det_runs), started side by
side with one thread each: CPU kernels reduce in an order fixed by the
thread count, so runs are bit-identical for the same count, not necessarily
across counts. The second run is compared up to its checkpoint of iteration
DET_KILL_AT (it is killed there for the resume test).
"""
import torch
from conftest import DET_KILL_AT, read_scalars

from lightvit_mm.checkpoint.io import safe_mmengine_checkpoints

LOSSES = ('loss', 'loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls', 'acc', 'loss_bbox', 'loss_mask')


def test_two_seeded_runs_log_identical_losses_and_weights(digits_det_runs):
    first = read_scalars(digits_det_runs['reference'])[:DET_KILL_AT]
    second = read_scalars(digits_det_runs['interrupted'])[:DET_KILL_AT]  # before the kill
    assert [r['iter'] for r in first] == [r['iter'] for r in second] == [1, 2]
    for a, b in zip(first, second):
        for key in LOSSES + ('lr', ):
            assert a[key] == b[key], (a['iter'], key, a[key], b[key])
    assert len({r['loss'] for r in first}) == DET_KILL_AT  # it did train
    name = f'iter_{DET_KILL_AT}.pth'
    with safe_mmengine_checkpoints():
        weights = [torch.load(digits_det_runs[run] / name, weights_only=True)['state_dict']
                   for run in ('reference', 'interrupted')]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])

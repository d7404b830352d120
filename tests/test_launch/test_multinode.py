"""Two nodes on one machine (docs/cluster.md): ``tools/dist_train.sh`` called
twice with ``NNODES=2``, ``NODE_RANK=0/1`` and ``MASTER_ADDR=127.0.0.1``, one
CPU process each (gloo), trains the digits Mask R-CNN with the same losses as
one node with 2 processes (same seed, same global batch: the session's
conftest.digits_dist_run)."""
import pytest
import torch
from conftest import DIST_ITERS, finish_dist_training, free_port, read_scalars, start_dist_training

#: relative tolerance on each logged loss: the two runs do the same arithmetic
#: in the same order (the allreduce of two gradients is a + b on every rank).
RTOL = 1e-6


def losses(work_dir):
    return [{k: v for k, v in r.items() if k.startswith('loss')} for r in read_scalars(work_dir)]


@pytest.mark.skipif(torch.cuda.is_available(), reason='tests the no-GPU path (gloo)')
def test_two_nodes_match_one_node(tiny_digits, digits_dist_run, tmp_path):
    # Two nodes x 1 process, sharing the work dir as nodes share storage.
    two_nodes = tmp_path / 'two_nodes'
    port = free_port()
    nodes = [start_dist_training(two_nodes, tiny_digits, 1, port, nnodes=2, node_rank=rank)
             for rank in (0, 1)]
    (code0, out0), (code1, out1) = [finish_dist_training(p) for p in nodes]
    assert code0 == 0, out0[-5000:]
    assert code1 == 0, out1[-5000:]
    assert 'GPU number: 2' in out0  # mmengine's name for the world size
    assert "dist_cfg=dict(backend='gloo')" in out0
    assert sum('Iter(train)' in line for line in out0.splitlines()) == DIST_ITERS
    assert 'Iter(train)' not in out1  # rank 1 trains, rank 0 logs
    # One node x 2 processes, same seed and global batch (2 x 2).
    assert digits_dist_run['code'] == 0, digits_dist_run['output'][-5000:]
    expected, got = losses(digits_dist_run['work_dir']), losses(two_nodes)
    assert len(expected) == DIST_ITERS and set(expected[0]) >= {'loss', 'loss_mask', 'loss_cls'}
    assert got == [{k: pytest.approx(v, rel=RTOL) for k, v in r.items()} for r in expected]
    assert (two_nodes / f'iter_{DIST_ITERS}.pth').is_file()  # written once, by rank 0

"""Two nodes on one machine (docs/cluster.md): ``tools/dist_train.sh`` called
twice with ``NNODES=2``, ``NODE_RANK=0/1`` and ``MASTER_ADDR=127.0.0.1``, one
CPU process each (gloo), trains the digits Mask R-CNN with the same losses as
one node with 2 processes (same seed, same global batch)."""
import os
import os.path as osp
import socket
import subprocess
import sys

import pytest
import torch
from conftest import DIGITS_CONFIG, ONE_THREAD, REPO, read_scalars, tiny_digits_options

MAX_ITERS = 2
#: relative tolerance on each logged loss: the two runs do the same arithmetic
#: in the same order (the allreduce of two gradients is a + b on every rank).
RTOL = 1e-6


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def start_node(work_dir, data_root, nproc, nnodes, node_rank, port):
    # One thread per process in both layouts: torchrun sets OMP_NUM_THREADS=1
    # only when it starts several processes per node, and another thread
    # count reduces in another order (losses 3e-4 apart after one step).
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(port), NNODES=str(nnodes),
               NODE_RANK=str(node_rank), MASTER_ADDR='127.0.0.1', **ONE_THREAD)
    return subprocess.Popen(
        ['bash', osp.join(REPO, 'tools/dist_train.sh'), DIGITS_CONFIG, str(nproc),
         '--work-dir', str(work_dir), '--cfg-options',
         *tiny_digits_options(data_root, max_iters=MAX_ITERS)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO, env=env)


def finish(process):
    try:
        output, _ = process.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
    return process.returncode, output


def losses(work_dir):
    return [{k: v for k, v in r.items() if k.startswith('loss')} for r in read_scalars(work_dir)]


@pytest.mark.skipif(torch.cuda.is_available(), reason='tests the no-GPU path (gloo)')
def test_two_nodes_match_one_node(tiny_digits, tmp_path):
    # Two nodes x 1 process, sharing the work dir as nodes share storage.
    two_nodes = tmp_path / 'two_nodes'
    port = free_port()
    nodes = [start_node(two_nodes, tiny_digits, 1, 2, rank, port) for rank in (0, 1)]
    (code0, out0), (code1, out1) = [finish(p) for p in nodes]
    assert code0 == 0, out0[-5000:]
    assert code1 == 0, out1[-5000:]
    assert 'GPU number: 2' in out0  # mmengine's name for the world size
    assert "dist_cfg=dict(backend='gloo')" in out0
    assert sum('Iter(train)' in line for line in out0.splitlines()) == MAX_ITERS
    assert 'Iter(train)' not in out1  # rank 1 trains, rank 0 logs
    # One node x 2 processes, same seed and global batch (2 x 2).
    one_node = tmp_path / 'one_node'
    code, out = finish(start_node(one_node, tiny_digits, 2, 1, 0, free_port()))
    assert code == 0, out[-5000:]
    expected, got = losses(one_node), losses(two_nodes)
    assert len(expected) == MAX_ITERS and set(expected[0]) >= {'loss', 'loss_mask', 'loss_cls'}
    assert got == [{k: pytest.approx(v, rel=RTOL) for k, v in r.items()} for r in expected]
    assert (two_nodes / f'iter_{MAX_ITERS}.pth').is_file()  # written once, by rank 0

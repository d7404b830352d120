"""Determinism: two training runs of the digits config with
``randomness=dict(seed=0, deterministic=True)`` log identical losses.

Both runs use one thread each (run side by side on the shared cores):
CPU kernels reduce in an order fixed by the thread count, so runs are
bit-identical for the same count, not necessarily across counts.
"""
import os
import subprocess

from conftest import REPO, read_scalars, tiny_digits_options, train_command

MAX_ITERS = 3
LOSSES = ('loss', 'loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls', 'acc', 'loss_bbox', 'loss_mask')


def test_two_seeded_runs_log_identical_losses(tiny_digits, tmp_path):
    options = tiny_digits_options(tiny_digits, max_iters=MAX_ITERS, seed=0, deterministic=True)
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
    runs = []
    for name in ('a', 'b'):
        with open(tmp_path / f'{name}.log', 'w') as log:  # the child keeps its own handle
            runs.append(subprocess.Popen(train_command(tmp_path / name, options), cwd=REPO,
                                         env=env, stdout=log, stderr=subprocess.STDOUT))
    try:
        for name, run in zip('ab', runs):
            code = run.wait(timeout=600)
            assert code == 0, (tmp_path / f'{name}.log').read_text()[-5000:]
    finally:
        for run in runs:
            if run.poll() is None:
                run.kill()
                run.wait()
    first, second = read_scalars(tmp_path / 'a'), read_scalars(tmp_path / 'b')
    assert [r['iter'] for r in first] == [r['iter'] for r in second] == [1, 2, 3]
    for a, b in zip(first, second):
        for key in LOSSES + ('lr', ):
            assert a[key] == b[key], (a['iter'], key, a[key], b[key])
    assert len({r['loss'] for r in first}) == MAX_ITERS  # it did train

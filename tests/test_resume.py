"""Resume after interruption: a training process killed with SIGKILL right
after its checkpoint of iteration K resumes with ``tools/train.py --resume``
and ends exactly where an uninterrupted run with the same seed ends.

The runs use :class:`lightvit_mm.engine.hooks.RNGStateHook` (added by a two-line
config inheriting the digits config): mmengine restores weights, optimizer,
schedulers, message hub and data order, but not the random generators, so
without the hook the resumed iterations draw other drop-path masks and other
RPN/RoI samples than the uninterrupted run (measured: other losses from the
first resumed iteration on). With it, and on the CPU (deterministic kernels,
one thread per process in every run), the final weights are bit-identical.
"""
import os
import os.path as osp
import signal
import subprocess
import time

import pytest
import torch
from conftest import DIGITS_CONFIG, REPO, read_scalars, tiny_digits_options, train_command

from lightvit_mm.utils.checkpoint import safe_mmengine_checkpoints

MAX_ITERS, KILL_AT = 4, 2  # KILL_AT < iterations per epoch (8 images / batch 2)
TIMEOUT = 600


def start(command, log_path, env):
    with open(log_path, 'w') as log:  # the child keeps its own handle
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                                env=env)


def finish(process, log_path):
    try:
        process.wait(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    with open(log_path) as f:
        return process.returncode, f.read()


def wait_for_checkpoint(process, work_dir, name, log_path):
    """Poll until ``last_checkpoint`` names ``name``: the CheckpointHook writes
    it after the checkpoint file is complete."""
    pointer = osp.join(work_dir, 'last_checkpoint')
    deadline = time.time() + TIMEOUT
    while time.time() < deadline:
        if osp.exists(pointer):
            with open(pointer) as f:
                if f.read().strip().endswith(name):
                    return
        if process.poll() is not None:
            with open(log_path) as f:
                pytest.fail(f'training exited ({process.returncode}) before writing {name}:\n'
                            + f.read()[-3000:])
        time.sleep(0.02)
    pytest.fail(f'no {name} in {work_dir} after {TIMEOUT} s')


def load(path):
    with safe_mmengine_checkpoints():  # mmengine's HistoryBuffer, numpy
        return torch.load(path, map_location='cpu', weights_only=True)


def assert_same_tensors(a, b, what):
    assert a.keys() == b.keys(), what
    for key in a:
        assert torch.equal(a[key], b[key]), f'{what}: {key} differs'


def assert_same_checkpoints(resumed, reference):
    assert resumed['meta']['iter'] == reference['meta']['iter'] == MAX_ITERS
    assert_same_tensors(resumed['state_dict'], reference['state_dict'], 'weights')
    # Optimizer: AdamW's step count and moments for every parameter, and the
    # param groups' learning rates.
    opt, ref_opt = resumed['optimizer'], reference['optimizer']
    assert opt['state'].keys() == ref_opt['state'].keys()
    for index in opt['state']:
        assert_same_tensors(opt['state'][index], ref_opt['state'][index], f'optimizer {index}')
    assert opt['param_groups'] == ref_opt['param_groups']
    # Schedulers: step counters and the last learning rates.
    assert resumed['param_schedulers'] == reference['param_schedulers']
    # Message hub: the loop's position and the logged lr/loss history.
    hub, ref_hub = resumed['message_hub'], reference['message_hub']
    for key in ('iter', 'epoch', 'max_iters'):
        assert hub['runtime_info'][key] == ref_hub['runtime_info'][key], key
    for key in ('train/lr', 'train/loss', 'train/loss_cls', 'train/loss_mask'):
        assert (hub['log_scalars'][key].data[0].tolist()
                == ref_hub['log_scalars'][key].data[0].tolist()), key


def test_resume_after_sigkill_equals_uninterrupted_run(tiny_digits, tmp_path):
    config = tmp_path / 'digits_rng.py'
    config.write_text(f'_base_ = {DIGITS_CONFIG!r}\n'
                      "custom_hooks = [dict(type='RNGStateHook')]\n")
    options = tiny_digits_options(tiny_digits, max_iters=MAX_ITERS,
                                  checkpoint_interval=KILL_AT)
    # One thread per process: the two concurrent runs share the cores
    # without changing the arithmetic between runs.
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
    ref_dir, run_dir = tmp_path / 'uninterrupted', tmp_path / 'interrupted'

    reference = start(train_command(ref_dir, options, config=config),
                      tmp_path / 'ref.log', env)
    victim = start(train_command(run_dir, options, config=config),
                   tmp_path / 'victim.log', env)
    try:
        wait_for_checkpoint(victim, run_dir, f'iter_{KILL_AT}.pth', tmp_path / 'victim.log')
        victim.send_signal(signal.SIGKILL)
        code, log = finish(victim, tmp_path / 'victim.log')
        assert code == -signal.SIGKILL, log[-3000:]
        assert not (run_dir / f'iter_{MAX_ITERS}.pth').exists()
        killed_at = max(r['iter'] for r in read_scalars(run_dir))
        assert killed_at == KILL_AT, f'killed late, after iteration {killed_at}'

        resumed = start(train_command(run_dir, options, '--resume', config=config),
                        tmp_path / 'resumed.log', env)
        code, log = finish(resumed, tmp_path / 'resumed.log')
        assert code == 0, log[-5000:]
    finally:
        if victim.poll() is None:  # a failure before the kill
            victim.kill()
            victim.wait()
        ref_code, ref_log = finish(reference, tmp_path / 'ref.log')
    assert ref_code == 0, ref_log[-5000:]

    # The resumed process started from iteration KILL_AT ...
    assert f'resumed epoch: 0, iter: {KILL_AT}' in log
    assert f'Advance dataloader {KILL_AT} steps' in log
    assert (run_dir / 'last_checkpoint').read_text().strip().endswith(f'iter_{MAX_ITERS}.pth')
    records = read_scalars(run_dir)  # the killed run's, then the resumed run's
    assert [r['iter'] for r in records] == list(range(1, MAX_ITERS + 1))
    # ... and every iteration logged the uninterrupted run's lr and losses:
    # exact equality (json keeps the logged floats as they are).
    ref_records = read_scalars(ref_dir)
    assert [r['iter'] for r in ref_records] == list(range(1, MAX_ITERS + 1))
    for record, ref in zip(records, ref_records):
        for key in ('lr', 'loss', 'loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls', 'loss_bbox',
                    'loss_mask'):
            assert record[key] == ref[key], (record['iter'], key, record[key], ref[key])

    # The checkpoint written before the kill equals the reference's, and the
    # final one (weights, optimizer, schedulers, message hub) too.
    killed = load(run_dir / f'iter_{KILL_AT}.pth')
    assert 'rng_state' in killed
    assert_same_tensors(killed['state_dict'], load(ref_dir / f'iter_{KILL_AT}.pth')['state_dict'],
                        f'weights at iteration {KILL_AT}')
    assert_same_checkpoints(load(run_dir / f'iter_{MAX_ITERS}.pth'),
                            load(ref_dir / f'iter_{MAX_ITERS}.pth'))


def test_rng_state_hook_restores_on_resume_only(tmp_path):
    import random
    import types

    import numpy as np

    from lightvit_mm.engine.hooks import RNGStateHook
    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    checkpoint = {}
    RNGStateHook().before_save_checkpoint(None, checkpoint)
    expected = (torch.rand(3), np.random.rand(3), random.random())
    path = tmp_path / 'checkpoint.pth'
    torch.save(checkpoint, path)
    checkpoint = load(path)  # weights-only, mmengine's allow-list

    def draws(resume):
        hook = RNGStateHook()
        torch.manual_seed(2)
        np.random.seed(2)
        random.seed(2)
        hook.after_load_checkpoint(types.SimpleNamespace(_resume=resume), checkpoint)
        hook.before_train_iter(None, 0)
        return torch.rand(3), np.random.rand(3), random.random()

    resumed, loaded = draws(True), draws(False)
    assert torch.equal(resumed[0], expected[0]) and np.array_equal(resumed[1], expected[1])
    assert resumed[2] == expected[2]
    assert not torch.equal(loaded[0], expected[0])  # load_from leaves the generators alone

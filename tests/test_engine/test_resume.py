"""Resume after interruption: a training process killed with SIGKILL right
after its checkpoint of iteration K resumes with ``tools/train.py --resume``
and ends exactly where an uninterrupted run with the same seed ends.

The runs (conftest.digits_det_runs, shared with other tests) use
:class:`lightvit_mm.engine.hooks.rng_state_hook.RNGStateHook` (in the digits config):
mmengine restores weights, optimizer, schedulers, message hub and data
order, but not the random generators, so
without the hook the resumed iterations draw other drop-path masks and other
RPN/RoI samples than the uninterrupted run (measured: other losses from the
first resumed iteration on). With it, and on the CPU (deterministic kernels,
one thread per process in every run), the final weights are bit-identical.
"""
import re
import signal

import torch
from conftest import DET_ITERS, DET_KILL_AT, read_scalars

from lightvit_mm.checkpoint.io import safe_mmengine_checkpoints

MAX_ITERS, KILL_AT = DET_ITERS, DET_KILL_AT


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


def test_resume_after_sigkill_equals_uninterrupted_run(digits_det_runs):
    """The session's two seeded digits runs (conftest.digits_det_runs): the
    interrupted one was killed right after its checkpoint of iteration
    KILL_AT and resumed; the reference ran through."""
    ref_dir, run_dir = digits_det_runs['reference'], digits_det_runs['interrupted']
    code, log = digits_det_runs['killed_result']
    assert code == -signal.SIGKILL, log[-3000:]
    logged = [int(i) for i in re.findall(r'Iter\(train\) \[\s*(\d+)/', log)]
    assert max(logged) == KILL_AT, f'killed late, after iteration {max(logged)}'
    code, log = digits_det_runs['resumed_result']
    assert code == 0, log[-5000:]

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

    from lightvit_mm.engine.hooks.rng_state_hook import RNGStateHook
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

import os
import os.path as osp
import subprocess

import pytest
import torch

DATA = osp.join(osp.dirname(__file__), 'data')
REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def load_tool(path):
    """The script ``path`` (relative to the repository, e.g.
    ``'tools/analysis/get_flops.py'``) imported as a module."""
    import importlib.util
    name = osp.splitext(osp.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, osp.join(REPO, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: a small LightViT arch for the bad-input cases (stage widths 16, 32, 64; 4 global tokens)
MINI = dict(embed_dims=[16, 32, 64], depths=[1, 1, 1], num_heads=[2, 2, 4],
            mlp_ratios=[2, 2, 2], num_tokens=4)


class ErrorCases(dict):
    """Bad-input cases of one test file: name -> (func(tmp_path), error,
    patterns). ``@CASES(name, error, *patterns)`` registers ``func``, which
    must raise ``error`` with a message matching every regex of ``patterns``
    (what was wrong and, where the message has it, what is accepted);
    :meth:`check` runs one and prints its message (``pytest -s`` shows them)."""

    def __call__(self, name, error, *patterns):
        def register(func):
            self[name] = (func, error, patterns)
            return func
        return register

    def check(self, name, tmp_path):
        import re
        func, error, patterns = self[name]
        with pytest.raises(error) as info:
            func(tmp_path)
        value = info.value  # a KeyError's str() is the repr of its message
        message = value.args[0] if isinstance(value, KeyError) and value.args else str(value)
        print(f'\n[{name}] {type(value).__name__}: {message}')
        for pattern in patterns:
            assert re.search(pattern, message), f'{pattern!r} not in {message!r}'


def build_model(cfg):
    """Build ``cfg.model`` in the registry scope of the config's package
    (mmdet, mmseg or mmpretrain), leaving the default scope as it was."""
    from mmengine.registry import MODELS, DefaultScope
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        return MODELS.build(cfg.model)


def backbone_grads(model, x, forward=None):
    """One backward pass of ``model`` (called through ``forward`` if given,
    e.g. its compiled version) on ``x``: its outputs and parameter gradients
    by name. The loss weights every output element differently (linspace -1
    to 1): a plain sum has gradients of about 0 through the final LayerNorms."""
    model.zero_grad()
    outs = (model if forward is None else forward)(x)
    sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in outs).backward()
    return outs, {n: p.grad.clone() for n, p in model.named_parameters()}


def _process_wide_instances():
    """mmengine classes whose instances live for the whole process, by name:
    the default registry scope and the visualizers (every subclass loaded)."""
    from mmengine.registry import DefaultScope
    from mmengine.visualization import Visualizer
    classes, todo = [DefaultScope], [Visualizer]
    while todo:
        cls = todo.pop()
        classes.append(cls)
        todo.extend(cls.__subclasses__())
    return classes


@pytest.fixture(autouse=True)
def _isolated_mmengine_instances():
    """Every test ends with mmengine's process-wide instances it started with.

    ``init_default_scope('mmseg')`` in one test would otherwise stay the
    current scope, and a later test building from another package's
    registry without a scope of its own (e.g. the model converter's
    ``mmpretrain`` classifier) would look in mmseg's. The stock configs name
    their visualizer ``'visualizer'``, so a second Runner in this process would
    get the first one's, writing into that test's work dir (removed once the
    test passed: ``tmp_path_retention_policy``).
    """
    import copy
    saved = {cls: copy.copy(cls._instance_dict) for cls in _process_wide_instances()}
    yield
    for cls in _process_wide_instances():
        cls._instance_dict = saved.get(cls, type(cls._instance_dict)())


@pytest.fixture(scope='session')
def official_vectors():
    """Outputs of the official LightViT code on a small architecture
    (shared/reference/official_mini_vectors.pt, copied into tests/data)."""
    return torch.load(osp.join(DATA, 'official_mini_vectors.pt'), weights_only=True)


@pytest.fixture(scope='session')
def official_vectors_v2():
    """Outputs of the official backbone and ``LightViTFPN`` on the same small
    architecture with every weight at a trained-like scale
    (shared/reference/official_mini_vectors_v2.pt, copied into tests/data; see
    PAPER.md): attentions and gates far from uniform, so a wrong scale, norm,
    index or activation moves the outputs well past float rounding."""
    return torch.load(osp.join(DATA, 'official_mini_vectors_v2.pt'), weights_only=True)


def load_official_backbone(model, state_dict):
    """Load an official backbone ``state_dict`` into ``model`` except the
    ``relative_position_index`` buffers, which stay the model's own (a plain
    strict load would overwrite them with the official ones, hiding a wrong
    index); every other key must match."""
    index = {k for k in state_dict if k.endswith('relative_position_index')}
    report = model.load_state_dict(
        {k: v for k, v in state_dict.items() if k not in index}, strict=False)
    assert set(report.missing_keys) == index and index, report
    assert not report.unexpected_keys, report
    return model


@pytest.fixture(scope='session')
def mini_arch(official_vectors):
    a = official_vectors['arch']
    return dict(embed_dims=a['embed_dims'], depths=a['num_layers'],
                num_heads=a['num_heads'], mlp_ratios=a['mlp_ratios'],
                num_tokens=a['num_tokens'])


# ---------------------------------------------------------------------------
# Tiny training runs of the digits demo config (resume, distributed and
# determinism tests): 64x64 canvases, batch 2, no validation, a few iterations.
# ---------------------------------------------------------------------------
DIGITS_CONFIG = osp.join(REPO, 'configs/mmdet/digits/mask-rcnn_lightvit-t_lightvit-fpn_digits.py')
SEG_DIGITS_CONFIG = osp.join(REPO, 'configs/mmseg/digits/lightvit-t_upernet_digits.py')
CLS_DIGITS_CONFIG = osp.join(REPO, 'configs/mmpretrain/digits/lightvit-tiny_digits.py')
TINY_CANVAS = 64


@pytest.fixture(scope='session')
def tiny_digits(tmp_path_factory):
    """A tiny digits COCO dataset (8 train, 2 val 64x64 canvases); its root."""
    from lightvit_mm.demo_data.digits import build_digits_coco
    root = str(tmp_path_factory.mktemp('tiny_digits'))
    build_digits_coco(root, num_train=8, num_val=2, canvas_size=TINY_CANVAS,
                      digit_size=(16, 30))
    return root


# --cfg-options that drop the val and test loops of a config (training only).
NO_EVAL_OPTIONS = ['val_dataloader=None', 'val_cfg=None', 'val_evaluator=None',
                   'test_dataloader=None', 'test_cfg=None', 'test_evaluator=None']


def tiny_digits_options(data_root, max_iters=4, checkpoint_interval=None,
                        warmup_iters=None, seed=0, deterministic=True):
    """``--cfg-options`` for a short run of :data:`DIGITS_CONFIG` on
    :func:`tiny_digits`: batch 2, no worker processes, 64x64 inputs, a log
    line (and a ``vis_data/scalars.json`` record) every iteration, no
    validation, the schedule (warm-up then cosine) squeezed into
    ``max_iters``, and a fixed seed.

    ``train_dataloader.dataset.pipeline.2`` is the config's ``Resize``
    (the val/test pipelines are not used: no val/test loops).
    """
    warmup_iters = max_iters // 2 if warmup_iters is None else warmup_iters
    return [
        f'train_dataloader.dataset.data_root={data_root}/',
        'train_dataloader.batch_size=2',
        'train_dataloader.num_workers=0',
        'train_dataloader.persistent_workers=False',
        f'train_dataloader.dataset.pipeline.2.scale=({TINY_CANVAS},{TINY_CANVAS})',
        *NO_EVAL_OPTIONS,
        f'train_cfg.max_iters={max_iters}',
        f'train_cfg.val_interval={max_iters}',
        f'default_hooks.checkpoint.interval={checkpoint_interval or max_iters}',
        'default_hooks.logger.interval=1',
        f'param_scheduler.0.end={warmup_iters}',
        f'param_scheduler.1.begin={warmup_iters}',
        f'param_scheduler.1.end={max_iters}',
        f'randomness.seed={seed}',
        f'randomness.deterministic={deterministic}',
    ]


def train_command(work_dir, options, *extra, config=DIGITS_CONFIG):
    """``python tools/train.py CONFIG --work-dir WORK_DIR EXTRA... --cfg-options
    OPTIONS...`` with this interpreter."""
    import sys
    return [sys.executable, osp.join(REPO, 'tools/train.py'), str(config),
            '--work-dir', str(work_dir), *extra, '--cfg-options', *options]


def read_scalars(work_dir):
    """The per-iteration records of the run(s) logged in ``work_dir``: every
    ``<timestamp>/vis_data/scalars.json`` line with an ``iter``, in file order
    (one folder per run, sorted by its timestamp)."""
    import glob
    import json
    records = []
    for path in sorted(glob.glob(osp.join(str(work_dir), '*', 'vis_data', 'scalars.json'))):
        with open(path) as f:
            records += [r for r in map(json.loads, f) if 'iter' in r]
    return records


# ---------------------------------------------------------------------------
# The digits trainings the suite shares (trained once per session)
# ---------------------------------------------------------------------------
#: the shared detection runs: DET_ITERS iterations, a checkpoint every DET_KILL_AT
DET_ITERS, DET_KILL_AT = 4, 2  # DET_KILL_AT < iterations per epoch (8 images / batch 2)
#: one thread per training process: runs side by side on the shared cores keep
#: the same arithmetic (CPU kernels reduce in an order fixed by the thread count)
ONE_THREAD = dict(OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
TRAIN_TIMEOUT = 600


def start_training(command, log_path, env=None):
    """``command`` as a child process writing stdout and stderr to ``log_path``."""
    import os
    with open(log_path, 'w') as log:  # the child keeps its own handle
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                                env=dict(os.environ, **(env or ONE_THREAD)))


def finish_training(process, log_path, timeout=TRAIN_TIMEOUT):
    """Wait for ``process`` (killed after ``timeout`` s): its exit code and log."""
    try:
        process.wait(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    with open(log_path) as f:
        return process.returncode, f.read()


def wait_for_checkpoint(process, work_dir, name, log_path, timeout=TRAIN_TIMEOUT):
    """Poll until ``work_dir/last_checkpoint`` names ``name`` (the
    CheckpointHook writes it after the checkpoint file is complete)."""
    import time
    pointer = osp.join(work_dir, 'last_checkpoint')
    deadline = time.time() + timeout
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
    pytest.fail(f'no {name} in {work_dir} after {timeout} s')


@pytest.fixture(scope='session')
def digits_det_runs(tiny_digits, tmp_path_factory):
    """Two seeded runs of the digits detection config (RNGStateHook included)
    with ``tools/train.py``: DET_ITERS iterations, checkpoints every
    DET_KILL_AT, one thread each, started side by side. ``reference`` runs
    through; ``interrupted`` is killed with SIGKILL once its checkpoint of
    iteration DET_KILL_AT is complete, then resumed with ``--resume`` in the
    same work dir. Shared by test_resume (interruption), test_determinism
    (two seeded runs) and test_inference_apis (``reference/iter_4.pth``).

    Returns a dict: ``reference``/``interrupted`` work dirs; ``options``;
    ``reference_result``, ``killed_result``, ``resumed_result``: (exit code,
    log) of each process.
    """
    import signal
    root = tmp_path_factory.mktemp('digits_det_runs')
    options = tiny_digits_options(tiny_digits, max_iters=DET_ITERS,
                                  checkpoint_interval=DET_KILL_AT)
    ref_dir, run_dir = root / 'reference', root / 'interrupted'
    reference = start_training(train_command(ref_dir, options), root / 'reference.log')
    victim = start_training(train_command(run_dir, options), root / 'killed.log')
    try:
        wait_for_checkpoint(victim, run_dir, f'iter_{DET_KILL_AT}.pth', root / 'killed.log')
        victim.send_signal(signal.SIGKILL)
        killed = finish_training(victim, root / 'killed.log')
        resumed = finish_training(
            start_training(train_command(run_dir, options, '--resume'), root / 'resumed.log'),
            root / 'resumed.log')
    finally:
        if victim.poll() is None:  # a failure before the kill
            victim.kill()
            victim.wait()
        ref_result = finish_training(reference, root / 'reference.log')
    assert ref_result[0] == 0, ref_result[1][-5000:]
    return dict(reference=ref_dir, interrupted=run_dir, options=options,
                reference_result=ref_result, killed_result=killed, resumed_result=resumed)


@pytest.fixture(scope='session')
def digits_checkpoints(tiny_digits, tiny_digits_cls, tmp_path_factory, request):
    """Checkpoints of the three digits configs: detection from
    :func:`digits_det_runs` (iteration DET_ITERS), segmentation and
    classification of one iteration each, trained while the detection runs
    train (their processes use a core the resumed detection run leaves idle).
    Returns dict(checkpoints={config: path}, det_root=..., cls_root=...,
    det_image=one detection val image)."""
    root = tmp_path_factory.mktemp('digits_checkpoints')
    runs = {}
    for name, config, data_root in (('seg', SEG_DIGITS_CONFIG, tiny_digits),
                                    ('cls', CLS_DIGITS_CONFIG, tiny_digits_cls)):
        log = root / f'{name}.log'
        runs[config] = (start_training(train_command(root / name, one_iteration(data_root),
                                                     config=config), log),
                        log, root / name / 'iter_1.pth')
    try:
        digits_det_runs = request.getfixturevalue('digits_det_runs')
    except BaseException:  # a failed detection run leaves no training behind
        for process, _, _ in runs.values():
            if process.poll() is None:
                process.kill()
                process.wait()
        raise
    checkpoints = {DIGITS_CONFIG: str(digits_det_runs['reference'] / f'iter_{DET_ITERS}.pth')}
    for config, (process, log, checkpoint) in runs.items():
        code, text = finish_training(process, log)
        assert code == 0, text[-5000:]
        checkpoints[config] = str(checkpoint)
    val = osp.join(tiny_digits, 'val')
    return dict(checkpoints=checkpoints, det_root=tiny_digits, cls_root=tiny_digits_cls,
                det_image=osp.join(val, sorted(os.listdir(val))[0]))


def free_port():
    """A TCP port of 127.0.0.1 free at the time of the call."""
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


#: iterations of the shared run with several processes (digits_dist_run)
DIST_ITERS = 2


def start_dist_training(work_dir, data_root, nproc, port, nnodes=1, node_rank=0,
                        max_iters=DIST_ITERS):
    """``tools/dist_train.sh DIGITS_CONFIG NPROC`` on :func:`tiny_digits_options`
    as node ``node_rank`` of ``nnodes`` (``MASTER_ADDR=127.0.0.1``), a child
    process with stdout and stderr piped together. One thread per process in
    every layout: torchrun sets OMP_NUM_THREADS=1 only when it starts several
    processes per node, and another thread count reduces in another order
    (losses 3e-4 apart after one step)."""
    import sys
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(port), NNODES=str(nnodes),
               NODE_RANK=str(node_rank), MASTER_ADDR='127.0.0.1', **ONE_THREAD)
    return subprocess.Popen(
        ['bash', osp.join(REPO, 'tools/dist_train.sh'), DIGITS_CONFIG, str(nproc),
         '--work-dir', str(work_dir), '--cfg-options',
         *tiny_digits_options(data_root, max_iters=max_iters)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO, env=env)


def finish_dist_training(process, timeout=TRAIN_TIMEOUT):
    """Wait for ``process`` (killed after ``timeout`` s): its exit code and output."""
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
    return process.returncode, output


@pytest.fixture(scope='session')
def digits_dist_run(tiny_digits, tmp_path_factory):
    """One node, 2 CPU processes (gloo): ``tools/dist_train.sh`` on the digits
    detection config for DIST_ITERS iterations. Shared by test_distributed
    (what a run with several processes logs and writes) and test_multinode
    (the one-node reference of the two-node run). Returns dict(work_dir=...,
    code=exit code, output=stdout and stderr)."""
    work_dir = tmp_path_factory.mktemp('digits_dist_run') / 'work'
    code, output = finish_dist_training(start_dist_training(work_dir, tiny_digits, 2, free_port()))
    return dict(work_dir=work_dir, code=code, output=output)


@pytest.fixture(scope='session')
def standins(tmp_path_factory):
    """Stand-ins for COCO 2017, ADE20K and ImageNet in their real layouts
    (standins), 2 train and 2 val images each: the roots
    {'coco': ..., 'ade': ..., 'imagenet': ...}."""
    import standins as s
    root = tmp_path_factory.mktemp('standins')
    roots = dict(coco=str(root / 'coco'), ade=str(root / 'ade' / 'ADEChallengeData2016'),
                 imagenet=str(root / 'imagenet'))
    s.build_coco2017_standin(roots['coco'])
    s.build_ade20k_standin(roots['ade'])
    s.build_imagenet_standin(roots['imagenet'])
    return roots


# ---------------------------------------------------------------------------
# Checkpoints of the three digits configs after one iteration (inference APIs,
# test tools), and the options that evaluate them on the tiny data.
# ---------------------------------------------------------------------------
def one_iteration(root):
    """--cfg-options for one training iteration on ``root``, no evaluation."""
    return [f'train_dataloader.dataset.data_root={root}/', 'train_dataloader.batch_size=2',
            'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
            *NO_EVAL_OPTIONS, 'train_cfg.max_iters=1', 'train_cfg.val_interval=1',
            'default_hooks.checkpoint.interval=1']


def eval_options(config, root):
    """--cfg-options that point a digits config's test split at ``root``."""
    options = [f'test_dataloader.dataset.data_root={root}/', 'test_dataloader.num_workers=0',
               'test_dataloader.persistent_workers=False', 'test_dataloader.batch_size=1']
    if config == DIGITS_CONFIG:
        # keep every box: a checkpoint of a few iterations may score all of
        # them under the default 0.05, and CocoMetric then reports no metric
        options += [f'test_evaluator.ann_file={root}/annotations/instances_val.json',
                    'model.test_cfg.rcnn.score_thr=0.0']
    return options


@pytest.fixture(scope='session')
def tiny_digits_cls(tmp_path_factory):
    """A tiny digits classification set (4 train, 2 val 48x48 images in class
    folders); its root."""
    from lightvit_mm.demo_data.digits import build_digits_cls
    root = str(tmp_path_factory.mktemp('tiny_cls'))
    build_digits_cls(root, num_train=4, num_val=2)
    return root


def tiny_cls_options(data_root, max_iters=2, validate=False):
    """``--cfg-options`` for a short run of :data:`CLS_DIGITS_CONFIG` on
    :func:`tiny_digits_cls`: batch 2, no worker processes, a log line every
    iteration, the schedule squeezed into ``max_iters``, and validation at the
    last iteration if ``validate`` (else none)."""
    options = []
    for split in ('train', 'val') if validate else ('train', ):
        options += [f'{split}_dataloader.dataset.data_root={data_root}',
                    f'{split}_dataloader.batch_size=2', f'{split}_dataloader.num_workers=0',
                    f'{split}_dataloader.persistent_workers=False']
    return options + ([] if validate else NO_EVAL_OPTIONS) + [
        f'train_cfg.max_iters={max_iters}', f'train_cfg.val_interval={max_iters}',
        f'default_hooks.checkpoint.interval={max_iters}', 'default_hooks.logger.interval=1',
        f'param_scheduler.0.end={max_iters // 2}', f'param_scheduler.1.begin={max_iters // 2}',
        f'param_scheduler.1.end={max_iters}']


# ---------------------------------------------------------------------------
# Parallel runs (pytest-xdist, ``make test``: ``-n 2 --dist loadscope``)
# ---------------------------------------------------------------------------
#: the session fixtures that train: each xdist worker is a session of its own
SHARED_TRAININGS = ('digits_det_runs', 'digits_checkpoints', 'digits_dist_run')
#: the test modules that use them, one scope for ``--dist loadscope`` (below),
#: so the trainings run once, on one worker
SHARED_TRAINING_MODULES = (
    'tests/test_checkpoint/test_inference_apis.py', 'tests/test_engine/test_determinism.py',
    'tests/test_engine/test_resume.py', 'tests/test_launch/test_distributed.py',
    'tests/test_launch/test_multinode.py', 'tests/test_launch/test_test_outputs.py')
SHARED_TRAINING_SCOPE = ' '.join(SHARED_TRAINING_MODULES)
#: the longest scopes (minutes each on 2 cores), handed out first, longest
#: first, so that no worker starts one of them when the other is nearly done
LONGEST_SCOPES = (SHARED_TRAINING_SCOPE, 'tests/test_tools/test_digits_pipeline.py',
                  'tests/test_configs/test_paper_configs.py', 'tests/test_install.py',
                  'tests/test_tools/test_speed_tools.py', 'tests/test_tools/test_gpu_check.py',
                  'tests/test_deploy/test_precision.py', 'tests/test_deploy/test_deployment.py',
                  'tests/test_deploy/test_export.py')


def module_of(nodeid):
    """The test module part of a pytest node id (``tests/x.py::test_y[z]``)."""
    return nodeid.split('::', 1)[0]


def pytest_collection_modifyitems(items):
    """Refuse a test that uses one of :data:`SHARED_TRAININGS` outside
    :data:`SHARED_TRAINING_MODULES`: under ``--dist loadscope`` its worker
    would train that fixture a second time."""
    for item in items:
        info = getattr(item, '_fixtureinfo', None)
        module = module_of(item.nodeid)
        if (info and set(info.name2fixturedefs) & set(SHARED_TRAININGS)
                and module not in SHARED_TRAINING_MODULES):
            raise pytest.UsageError(
                f'{item.nodeid} uses one of {SHARED_TRAININGS}: add {module} to '
                'SHARED_TRAINING_MODULES in tests/conftest.py')


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadscope`` with each test module one scope (its module-scoped
    fixtures are built once) and :data:`SHARED_TRAINING_MODULES` one scope
    together; :data:`LONGEST_SCOPES` go out first. pytest-xdist's
    ``loadgroup`` would do this with ``xdist_group`` marks, but xdist 3.8 tags
    a test's group onto ``item._nodeid``, which pytest 9.2 no longer reads."""
    if config.getvalue('dist') != 'loadscope':
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ModulesLongestFirst(LoadScopeScheduling):

        def _split_scope(self, nodeid):
            module = module_of(nodeid)
            return SHARED_TRAINING_SCOPE if module in SHARED_TRAINING_MODULES else module

        def _assign_work_unit(self, node):
            for scope in reversed(LONGEST_SCOPES):
                if scope in self.workqueue:
                    self.workqueue.move_to_end(scope, last=False)
            super()._assign_work_unit(node)

    return ModulesLongestFirst(config, log)


#: under pytest-xdist (``make test``), each worker's torch threads (and, through
#: OMP_NUM_THREADS, its subprocesses') share the CPUs instead of each taking
#: them all: on the 2-core Xeon, 1 thread per worker ran the non-deploy tests
#: in 656 s against 724 s with 2 (``-n 2 --dist loadscope``, 2026-12-03).
#: An OMP_NUM_THREADS set by the user wins.
_workers = int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))
if _workers > 1:
    os.environ.setdefault('OMP_NUM_THREADS', str(max(1, (os.cpu_count() or 1) // _workers)))
    torch.set_num_threads(int(os.environ['OMP_NUM_THREADS']))

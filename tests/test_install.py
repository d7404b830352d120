"""The package as an OpenMMLab user gets it: a wheel built with ``python -m build``
and installed into a fresh virtual environment that already holds torch and the
mmcv 2.1.0 wheel that tools/setup_env.sh built (no compiler runs), then used from
a folder outside the repository: a shipped config loads, `mim search` lists the
model zoo and `mim train` trains the digits demo config for two iterations.

The fresh venv gets torch (and what torch requires) as hard links to this
interpreter's installed files, RECORD by RECORD, dist-info included: pip sees
torch installed, as in a user's environment, without 90 s of unpacking several
GB. Hard links, not symbolic ones: a ``pip uninstall`` in the fresh venv would
remove its own links, never this venv's files (a copy is the fallback where the
two folders are on different file systems).

Slow (minutes), and it needs the package registries that tools/setup_env.sh
uses. Skipped when the cached mmcv wheel is missing.
"""
import glob
import importlib.metadata as metadata
import os
import os.path as osp
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import time
import zipfile

import pytest
import torch
from conftest import REPO, tiny_digits_options
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

pytestmark = pytest.mark.slow

MIM_CONFIG = 'mask-rcnn_lightvit-t_lightvit-fpn_digits.py'
TIMES = {}


def cached_mmcv_wheel():
    """The mmcv 2.1.0 wheel tools/setup_env.sh keeps for this torch, Python and
    platform (the same cache key), or None."""
    cuda = 'cu' + torch.version.cuda.replace('.', '') if torch.cuda.is_available() else 'cpu'
    key = '-'.join([f'torch{torch.__version__.replace("+", "_")}',
                    f'cp{sys.version_info[0]}{sys.version_info[1]}',
                    sysconfig.get_platform().replace('-', '_'), cuda])
    cache = os.environ.get('LIGHTVIT_WHEEL_CACHE',
                           osp.expanduser('~/.cache/lightvit_mm/wheels'))
    found = glob.glob(osp.join(cache, key, 'mmcv-2.1.0-*.whl'))
    return found[0] if found else None


def run(cmd, cwd, stage=None, isolated=True):
    """Run ``cmd`` in ``cwd``; its output, or the failure with the output in the
    message. ``isolated``: without this checkout (``PYTHONPATH``) or another
    venv in the environment. ``stage`` records its time in ``TIMES``."""
    env = dict(os.environ)
    if isolated:
        env = {k: v for k, v in env.items() if k not in ('PYTHONPATH', 'VIRTUAL_ENV')}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if stage:
        TIMES[stage] = time.perf_counter() - start
    assert proc.returncode == 0, f'{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}'
    return proc.stdout + proc.stderr


@pytest.fixture(scope='module')
def dist(tmp_path_factory):
    """The sdist and the wheel that ``python -m build`` makes of this checkout."""
    out = tmp_path_factory.mktemp('dist')
    run([sys.executable, '-m', 'build', '--outdir', str(out), REPO], cwd=str(out),
        stage='python -m build (sdist, then the wheel from it)', isolated=False)
    (sdist, ), (wheel, ) = glob.glob(str(out / '*.tar.gz')), glob.glob(str(out / '*.whl'))
    return sdist, wheel


def distribution_closure(name):
    """The installed distribution ``name`` and, transitively, every installed
    distribution it requires on this platform without extras (requirement
    markers evaluated as pip does)."""
    found, todo = {}, [name]
    while todo:
        key = canonicalize_name(todo.pop())
        if key in found:
            continue
        dist = metadata.distribution(key)
        found[key] = dist
        for line in dist.requires or ():
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({'extra': ''}):
                todo.append(req.name)
    return list(found.values())


def link_distribution_closure(name, site):
    """Hard-link the files of :func:`distribution_closure` (``name``'s) into the
    site-packages folder ``site`` of another venv; scripts outside
    site-packages (``bin/``) are left out, and so is every distribution ``site``
    already has (the fresh venv's pip and setuptools: mixing two versions' files
    breaks them). Returns those as ``name==version`` requirements, for pip to
    bring to this interpreter's versions."""
    present = {canonicalize_name(d.metadata['Name']) for d in metadata.distributions(path=[site])}
    left = []
    for dist in distribution_closure(name):
        if canonicalize_name(dist.metadata['Name']) in present:
            left.append(f'{dist.metadata["Name"]}=={dist.version}')
            continue
        base = osp.realpath(str(dist.locate_file('')))
        for file in dist.files or ():
            source = osp.realpath(str(dist.locate_file(file)))
            if not source.startswith(base + os.sep) or not osp.isfile(source):
                continue  # bin/ scripts (../../../bin/...) and RECORD lines of removed files
            target = osp.join(site, osp.relpath(source, base))
            os.makedirs(osp.dirname(target), exist_ok=True)
            try:
                os.link(source, target)
            except OSError:  # another file system
                shutil.copy2(source, target)
    return left


@pytest.fixture(scope='module')
def venv(dist, tmp_path_factory):
    """A fresh venv: torch (linked: :func:`link_distribution_closure`) and the
    cached mmcv wheel first, as a user's OpenMMLab environment, then
    ``lightvit-mm[mmdet]`` from the wheel and openmim (in this venv only: its
    dependency openxlab pins old setuptools, requests...).
    Yields its folder and the output of the second install."""
    mmcv = cached_mmcv_wheel()
    if mmcv is None:
        pytest.skip('no cached mmcv 2.1.0 wheel for this torch: run tools/setup_env.sh')
    root = tmp_path_factory.mktemp('venv')
    try:
        run([sys.executable, '-m', 'venv', str(root)], cwd=str(root), stage='python -m venv')
        python = str(root / 'bin' / 'python')
        site = run([python, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
                   cwd=str(root)).strip()
        start = time.perf_counter()
        left = link_distribution_closure('torch', site)
        TIMES['torch and its requirements linked in'] = time.perf_counter() - start
        pip = [python, '-m', 'pip', 'install', '--disable-pip-version-check', '--no-cache-dir']
        run(pip + [mmcv, *left], cwd=str(root), stage='pip install the cached mmcv wheel')
        log = run(pip + [f'{dist[1]}[mmdet]', 'openmim'], cwd=str(root),
                  stage='pip install lightvit-mm[mmdet] + openmim')
        yield root, log
    finally:
        # removed even when an install fails: a half-built venv left behind
        # fills the disk for every later test
        shutil.rmtree(root, ignore_errors=True)


def test_wheel_and_sdist_carry_configs_tools_and_model_index(dist):
    sdist, wheel = dist
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    for name in ('lightvit_mm/.mim/model-index.yml', 'lightvit_mm/.mim/tools/train.py',
                 'lightvit_mm/.mim/tools/test.py', 'lightvit_mm/.mim/configs/mmdet/metafile.yml',
                 f'lightvit_mm/.mim/configs/mmdet/digits/{MIM_CONFIG}',
                 'lightvit_mm/.mim/configs/_base_/lightvit_no_decay.py',
                 'lightvit_mm/models/backbones/lightvit.py'):
        assert name in names, f'{name} not in {osp.basename(wheel)}'
    configs = glob.glob(osp.join(REPO, 'configs', '**', '*.py'), recursive=True)
    assert len([n for n in names if n.startswith('lightvit_mm/.mim/configs/')
                and n.endswith('.py')]) == len(configs)
    assert not any('__pycache__' in n or n.startswith('tests/') for n in names)
    with tarfile.open(sdist) as t:
        members = {m.split('/', 1)[1] for m in t.getnames() if '/' in m}
    assert {'LICENSE', 'CITATION.cff', 'model-index.yml', 'configs/mmseg/metafile.yml',
            'tools/train.py', 'setup.py', 'pyproject.toml'} <= members


def test_install_into_stack_with_mmcv_builds_nothing(venv):
    _, log = venv
    assert 'Building wheel' not in log and 'Running setup.py' not in log, log
    installed = [line for line in log.splitlines() if line.startswith('Successfully installed')]
    assert installed and ('lightvit-mm-' in installed[0] or 'lightvit_mm-' in installed[0])
    assert not any(f' {name}-' in installed[0] for name in ('mmcv', 'torch')), installed[0]


def test_shipped_config_loads_outside_the_repository(venv, tmp_path):
    root, _ = venv
    code = ('import os.path as osp, lightvit_mm; from mmengine.config import Config; '
            'path = osp.join(osp.dirname(lightvit_mm.__file__), ".mim", "configs", "mmdet", '
            '"mask-rcnn_lightvit-t_lightvit-fpn_1x_coco.py"); cfg = Config.fromfile(path); '
            'print(lightvit_mm.__file__); print(cfg.model.backbone.type, '
            'cfg.optim_wrapper.paramwise_cfg.custom_keys.global_token.decay_mult)')
    out = run([str(root / 'bin' / 'python'), '-c', code], cwd=str(tmp_path)).split('\n')
    assert out[0].startswith(str(root)), f'imported {out[0]}, not the installed package'
    assert out[1] == 'LightViT 0.0'


def test_mim_search_lists_the_model_zoo(venv, tmp_path):
    root, _ = venv
    out = run([str(root / 'bin' / 'mim'), 'search', 'lightvit_mm'], cwd=str(tmp_path))
    for name in ('mask-rcnn_lightvit-t_lightvit-fpn_1x_coco', 'lightvit-tiny_8xb128_in1k',
                 'lightvit-b-in1k-pre_upernet_8xb2-160k_ade20k-512x512'):
        assert name in out, out


def test_mim_train_two_iterations_on_digits(venv, tiny_digits, tmp_path):
    root, _ = venv
    work_dir = tmp_path / 'work'
    out = run([str(root / 'bin' / 'mim'), 'train', 'lightvit_mm', MIM_CONFIG, '--work-dir',
         str(work_dir), '--cfg-options', *tiny_digits_options(tiny_digits, max_iters=2)],
        cwd=str(tmp_path), stage='mim train, 2 iterations')
    assert (work_dir / 'iter_2.pth').is_file()
    # mim found the config by its name in the installed package, not in this checkout.
    found = osp.join(osp.realpath(root), 'lib')
    assert f'will use {found}' in out and f'.mim/configs/mmdet/digits/{MIM_CONFIG}' in out, out
    print('\n'.join(f'{stage}: {seconds:.0f} s' for stage, seconds in TIMES.items()))


def test_editable_install_links_mim_files_to_the_checkout():
    """``pip install -e .`` (PEP 660, as tools/setup_env.sh does) links
    lightvit_mm/.mim/* to this checkout's folders; skipped when this checkout
    is not the editable install (e.g. run through PYTHONPATH)."""
    import importlib.metadata
    import json

    def editable_from_here(dist):
        info = json.loads(dist.read_text('direct_url.json') or '{}')
        return (info.get('dir_info', {}).get('editable', False)
                and osp.realpath(info['url'].removeprefix('file://')) == osp.realpath(REPO))

    # (the checkout's own lightvit_mm.egg-info may be found first: look at all)
    if not any(map(editable_from_here, importlib.metadata.distributions(name='lightvit-mm'))):
        pytest.skip('lightvit-mm is not installed in editable mode from this checkout')
    for name in ('configs', 'tools', 'model-index.yml'):
        link = osp.join(REPO, 'lightvit_mm', '.mim', name)
        assert osp.islink(link) and osp.realpath(link) == osp.realpath(osp.join(REPO, name))

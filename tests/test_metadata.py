"""The package metadata points at this project, the install commands of the
docs use its address, and the ``[mmpretrain]`` extra keeps out the transformers
releases that break mmpretrain 1.2.0; with one installed, ``import
lightvit_mm`` says so in one line (simulated: no transformers in CI)."""
import importlib
import importlib.metadata
import os.path as osp
import re

import pytest
from conftest import REPO
from packaging.requirements import Requirement

from lightvit_mm import registration as registry

OFFICIAL = 'https://github.com/hunto/LightViT'


@pytest.fixture(scope='module')
def dist():
    """setup.py's Distribution, read without building anything."""
    from distutils.core import run_setup
    return run_setup(osp.join(REPO, 'setup.py'), stop_after='init')


@pytest.fixture(scope='module')
def metadata(dist):
    return dist.metadata


def test_urls_point_at_this_project(metadata):
    assert metadata.name == 'lightvit-mm'
    assert metadata.url.endswith('/lightvit-mm') and 'hunto' not in metadata.url
    assert metadata.project_urls['Source'] == metadata.url
    # The authors' code is named as what it is, not as this package's source.
    official = {label: url for label, url in metadata.project_urls.items() if 'hunto' in url}
    assert official and all(label.startswith('Official LightViT') for label in official)
    assert OFFICIAL in official.values()


@pytest.mark.parametrize('doc', ['docs/install.md', 'README.md'])
def test_docs_install_from_this_repository(metadata, doc):
    with open(osp.join(REPO, doc)) as f:
        text = f.read()
    assert 'pip install ".[mmdet]"' in text
    urls = set(re.findall(r'lightvit-mm\[[a-z,]+\] @ git\+(\S+?)(?:\.git)?"', text))
    assert urls == {metadata.url}, urls
    # Never the unpublished index name on its own.
    assert not re.search(r'pip install "lightvit-mm\[[a-z,]+\]"', text)


def requirements(dist, extra):
    return {Requirement(r).name: Requirement(r) for r in dist.extras_require[extra]}


def test_mmpretrain_extra_keeps_out_breaking_transformers(dist):
    transformers = requirements(dist, 'mmpretrain')['transformers']
    bound = registry.TRANSFORMERS_BREAKING_MMPRETRAIN
    assert not transformers.specifier.contains(bound)
    # Tried with mmpretrain 1.2.0: 4.52.0 and 4.55.4 fail with ImportError,
    # 4.56.0 and 5.0.0 with TypeError (5.17.0 seen on a GPU machine).
    for breaking in ('4.52.0', '4.55.4', '4.56.0', '5.0.0', '5.17.0'):
        assert not transformers.specifier.contains(breaking)
    assert transformers.specifier.contains('4.51.3')  # the newest release that imports


def test_tests_extra_has_tensorboard(dist):
    assert 'tensorboard' in requirements(dist, 'tests')  # tests/test_launch/test_tracking.py


def simulate_breaking_transformers(monkeypatch, transformers_version, error):
    """``import mmpretrain`` failing with ``error`` as with a breaking
    transformers release, ``transformers_version`` installed."""
    real_import, real_version = importlib.import_module, importlib.metadata.version

    def import_module(name, *args):
        if name == 'mmpretrain.models':
            raise error
        return real_import(name, *args)

    def version(name):
        return transformers_version if name == 'transformers' else real_version(name)

    monkeypatch.setattr(registry.importlib, 'import_module', import_module)
    monkeypatch.setattr(registry.importlib.metadata, 'version', version)


#: what ``import mmpretrain`` 1.2.0 raises with these releases (tried)
BREAKING = [
    ('4.55.4', ImportError("cannot import name 'GenerationMixin' from 'transformers...'")),
    ('5.17.0', TypeError('NoneType takes no arguments')),
]


@pytest.mark.parametrize('version,error', BREAKING)
def test_breaking_transformers_explained_in_one_line(monkeypatch, version, error):
    simulate_breaking_transformers(monkeypatch, version, error)
    with pytest.raises(ImportError) as raised:
        registry.register_all_modules()
    message = str(raised.value)
    assert '\n' not in message
    assert f'transformers {version}' in message and 'mmpretrain 1.2.0' in message
    assert str(error) in message
    assert 'pip install "transformers<4.52"' in message
    assert raised.value.__cause__ is error  # the original, for the traceback


def test_working_transformers_costs_nothing(monkeypatch):
    """With a release that works, mmpretrain.models is not imported by us."""
    simulate_breaking_transformers(monkeypatch, '4.51.3', AssertionError('imported'))
    assert 'mmpretrain' in registry.register_all_modules()

"""The model-zoo metadata: model-index.yml and configs/*/metafile.yml (mmdet's
schema, read by `mim search`, mim's downloads and mmengine's hub)."""
import glob
import os.path as osp

import pytest
import yaml
from conftest import REPO

PACKAGES = ('mmdet', 'mmseg', 'mmpretrain')
MODEL_KEYS = {'Name', 'In Collection', 'Config', 'Metadata'}


def load_yaml(path):
    with open(osp.join(REPO, path)) as f:
        return yaml.safe_load(f)


@pytest.fixture(scope='module')
def metafiles():
    """{path: parsed metafile} for every file model-index.yml imports."""
    index = load_yaml('model-index.yml')
    return {path: load_yaml(path) for path in index['Import']}


def test_model_index_imports_one_metafile_per_package(metafiles):
    assert sorted(metafiles) == sorted(f'configs/{p}/metafile.yml' for p in PACKAGES)


def test_models_follow_the_schema(metafiles):
    names = []
    for path, meta in metafiles.items():
        collections = {c['Name'] for c in meta['Collections']}
        assert collections, f'{path}: no Collections'
        for model in meta['Models']:
            assert MODEL_KEYS <= set(model), f'{path}: {model.get("Name")} lacks ' \
                f'{sorted(MODEL_KEYS - set(model))}'
            assert model['In Collection'] in collections, (path, model['Name'])
            # mmdet's convention: the model is named after its config file.
            assert model['Name'] == osp.splitext(osp.basename(model['Config']))[0]
            for result in model.get('Results', []):
                assert {'Task', 'Dataset', 'Metrics'} <= set(result), (path, model['Name'])
                assert all(isinstance(v, (int, float)) for v in result['Metrics'].values())
            names.append(model['Name'])
    assert len(names) == len(set(names)), 'a model name is listed twice'


def test_every_config_path_exists_and_every_config_is_listed(metafiles):
    listed = [m['Config'] for meta in metafiles.values() for m in meta['Models']]
    missing = [p for p in listed if not osp.isfile(osp.join(REPO, p))]
    assert not missing, f'Config paths that do not exist: {missing}'
    shipped = sorted(osp.relpath(p, REPO) for package in PACKAGES for p in glob.glob(
        osp.join(REPO, 'configs', package, '**', '*.py'), recursive=True))
    assert len(shipped) >= 12, shipped  # guards against a wrong folder
    assert sorted(listed) == shipped, (
        f'not in a metafile: {sorted(set(shipped) - set(listed))}; '
        f'listed twice: {sorted(p for p in set(listed) if listed.count(p) > 1)}')

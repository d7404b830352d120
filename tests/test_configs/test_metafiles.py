"""The model-zoo metadata: model-index.yml and configs/*/metafile.yml (mmdet's
schema, read by `mim search`, mim's downloads and mmengine's hub)."""
import glob
import os.path as osp
import re

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


#: the pages that quote model-zoo figures: each metafile's README, and the top-level one
READMES = ['README.md'] + [f'configs/{p}/README.md' for p in PACKAGES]
LINK = re.compile(r'\]\(([^)\s]+\.py)\)')


def quoting_units(readme):
    """The table rows of ``readme`` whose first link goes to a config, as
    ``[(config path from the repository root, row)]``: each quotes that model."""
    with open(osp.join(REPO, readme)) as f:
        rows = [line for line in f.read().split('\n') if line.startswith('|')]
    found = []
    for row in rows:
        link = LINK.search(row)
        if link:
            found.append((osp.normpath(osp.join(osp.dirname(readme), link.group(1))), row))
    return found


def figures(model):
    """The figures of a metafile model a README must quote, as README text:
    every Results metric (as written in the metafile, e.g. ``37.8``), and the
    parameters and FLOPs in M and G with 2 decimals (e.g. ``28.05``, ``187.65``)."""
    quoted = {name: str(value) for result in model.get('Results', [])
              for name, value in result['Metrics'].items()}
    meta = model['Metadata']
    if 'Parameters' in meta:
        quoted['Parameters (M)'] = f'{meta["Parameters"] / 1e6:.2f}'
    if 'FLOPs' in meta:
        quoted['FLOPs (G)'] = f'{meta["FLOPs"] / 1e9:.2f}'
    return quoted


def quotes(text, figure):
    return re.search(rf'(?<![\d.]){re.escape(figure)}(?![\d])', text) is not None


def test_readmes_quote_the_metafile_figures(metafiles):
    models = {m['Config']: m for meta in metafiles.values() for m in meta['Models']}
    wrong, quoted = [], set()
    for readme in READMES:
        for path, text in quoting_units(readme):
            assert path in models, f'{readme} links {path}, which no metafile lists'
            model = models[path]
            for name, figure in figures(model).items():
                is_metric = name not in ('Parameters (M)', 'FLOPs (G)')
                if not is_metric and '| as ' in text:  # "as 1x": the figures of another row
                    continue
                if quotes(text, figure):
                    quoted.add((path, name))
                elif is_metric or readme != 'README.md':  # README.md gives no FLOPs for some
                    wrong.append(f'{readme}: {model["Name"]} {name} should read {figure}: '
                                 f'{text[:120]}')
    assert not wrong, '\n'.join(wrong)
    unquoted = [f'{m["Name"]} {name}' for path, m in models.items() for name in figures(m)
                if name not in ('Parameters (M)', 'FLOPs (G)') and (path, name) not in quoted]
    assert not unquoted, f'metafile results no README quotes: {unquoted}'


def test_a_stale_figure_is_found():
    model = dict(Metadata=dict(Parameters=28050000),
                 Results=[dict(Metrics={'box AP': 75.5, 'mask AP': 76.4})])
    assert figures(model) == {'box AP': '75.5', 'mask AP': '76.4', 'Parameters (M)': '28.05'}
    assert quotes('| cfg | 75.5 | 76.4 | 28.05 |', '75.5')
    assert not quotes('box AP 75.9, mask AP 79.2', '75.5')
    assert not quotes('| 175.5 | 75.55 |', '75.5')

"""``tools/analysis/gpu_check.sh --device cpu``: the GPU check's smoke mode
runs every phase and writes each table with the rows the GPU run needs.

The official code's rows are expected where it is at hand (``LIGHTVIT_OFFICIAL``
or ``.gpu_check/LightViT``, as ``gpu_check.py`` finds it); CI has neither.
"""
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from conftest import REPO, load_tool

gpu_check = load_tool('tools/analysis/gpu_check.py')
OFFICIAL = bool(os.environ.get('LIGHTVIT_OFFICIAL')) or osp.isfile(
    osp.join(gpu_check.CARRIED_OFFICIAL, 'detection', 'lightvit.py'))
OFFICIAL_ROW = ' (official code)'


def rows(text, first_column=None):
    """Cells of the Markdown table rows in ``text`` (headers and rules left
    out), those whose first cell is ``first_column`` if given."""
    headers = ('model', 'variant', 'backend', 'phase', 'speed ratio')
    found = [[c.strip() for c in line.strip().strip('|').split('|')]
             for line in text.splitlines() if line.startswith('| ') and '| ---' not in line]
    return [cells for cells in found if cells[0] not in headers
            and (first_column is None or cells[0] == first_column)]


@pytest.fixture(scope='module')
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp('gpu_check')
    done = subprocess.run(['bash', osp.join(REPO, 'tools', 'analysis', 'gpu_check.sh'), str(out),
                           '--device', 'cpu'], cwd=REPO, capture_output=True, text=True,
                          env=dict(os.environ, PYTHON=sys.executable), timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return {name: (out / name).read_text() for name in os.listdir(out)}


def test_every_phase_writes_its_file(smoke):
    # the device tool brings back at most 8 files
    assert set(smoke) == {'summary.md', 'gradients.md', 'backbones.md', 'compile.md',
                          'test_cuda.txt'}
    phases = {cells[0]: cells[1] for cells in rows(smoke['summary.md'])}
    assert phases == dict.fromkeys(
        ['gradients', 'backbones-1-fp32', 'compile', 'backbones-2-fp32', 'test_cuda'], 'done')
    assert 'torch 2.' in smoke['summary.md'] and 'mmengine 0.10.7' in smoke['summary.md']


def test_gradients_of_each_variant_agree_with_float64_per_group(smoke):
    text = smoke['gradients.md']
    variants = ['ours', 'ours, fused SDPA bias gradient'] + ['official code'] * OFFICIAL
    groups = [group for group, _ in gpu_check.GROUPS]
    for batch in (1, 2):
        table = text.split(f'### LightViT-T, batch {batch},')[1].split('###')[0]
        for variant in variants:
            cells = rows(table, variant)
            assert sorted(c[1] for c in cells) == sorted(groups + ['outputs (3 stages)'])
            assert all(float(c[3]) < 1e-4 for c in cells), cells  # relative L2, fp32 on CPU
        assert 'WRONG' not in table
    reproducer = text.split('### Fused attention alone')[1]
    for layout in ('broadcast (1, 2, 49, 49)', 'expanded view', 'materialised'):
        math_row = [c for c in rows(reproducer, 'math') if c[1] == layout][0]
        assert all(float(v) < 1e-5 for v in math_row[2:7]), math_row


def test_benchmark_tables_hold_ours_the_official_code_and_the_peers(smoke):
    text = smoke['backbones.md']
    expected = ['LightViT-T', 'LightViT-T (with_cp)', 'LightViT-S', 'PVTv2-B0 (timm)',
                'Swin-T (timm)']
    if OFFICIAL:
        expected += ['LightViT-T' + OFFICIAL_ROW, 'LightViT-S' + OFFICIAL_ROW]
    for batch in (1, 2):
        table = text.split(f'Backbones, 64x64, batch {batch} ')[1].split('## ')[0]
        names = [c[0] for c in rows(table) if not c[0].startswith('LightViT-T over')]
        assert sorted(names) == sorted(expected)
        paper = rows(table, 'LightViT-T over PVTv2-B0 (timm)')
        assert paper[0][1].startswith('1.11x') and ' / ' in paper[0][2]
    compiled = [c[0] for c in rows(smoke['compile.md'])]
    assert compiled == ['LightViT-T', 'LightViT-T (deploy)', 'LightViT-T (torch.compile, eager)'
                        ] + ['LightViT-T' + OFFICIAL_ROW] * OFFICIAL
    assert 'LightViT-T (torch.compile, eager): first timing' in smoke['compile.md']
    assert 'skipped' in smoke['test_cuda.txt']  # no GPU here: test_cuda.py skips


def test_a_wrong_gradient_is_called_wrong():
    torch.manual_seed(0)
    ref = {'stages.0.0.attn.relative_position_bias_table': torch.randn(169, 2, dtype=torch.float64),
           'patch_embed.proj.weight': torch.randn(4, 3, dtype=torch.float64)}
    outputs = [torch.randn(2, 3)]
    wrong = {n: g.float() for n, g in ref.items()}
    wrong['stages.0.0.attn.relative_position_bias_table'] *= 2
    text = gpu_check.gradient_table(
        {'float64 reference': dict(outputs=outputs, grads=ref),
         'right': dict(outputs=outputs, grads={n: g.float() for n, g in ref.items()}),
         'wrong': dict(outputs=outputs, grads=wrong)}, batch=1, size=8)
    assert '- right: worst parameter' in text and 'agrees with float64' in text
    assert ('- wrong: worst parameter stages.0.0.attn.relative_position_bias_table, relative L2 '
            '1.0e+00: WRONG') in text
    bias_row = [c for c in rows(text, 'wrong') if c[1] == 'position bias tables'][0]
    assert float(bias_row[3]) == pytest.approx(1.0)


def test_window_attention_swap_is_used_or_refused():
    from lightvit_mm import LightViT
    model = LightViT(arch='tiny', out_indices=(2, ), drop_path_rate=0.).train()
    calls = []
    x = torch.randn(1, 3, 32, 32)
    with gpu_check.window_attention(lambda *a: calls.append(1) or gpu_check.plain_attention(*a)):
        model(x)
    assert len(calls) == 6 + 6 + 2  # one per block (depths 2, 6, 6)
    with pytest.raises(RuntimeError, match='never called'):
        with gpu_check.window_attention(gpu_check.plain_attention), torch.no_grad():
            model(x)  # without grad the fused kernel runs, not the training path


def test_unknown_phase_is_refused(capsys):
    with pytest.raises(SystemExit):
        gpu_check.parse_args(['--out', 'x', '--device', 'cpu', '--phases', 'gradients', 'bogus'])
    assert "unknown --phases ['bogus']" in capsys.readouterr().err

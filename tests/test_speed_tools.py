"""The speed tooling works (no timings are asserted: speed lives in the benchmark).

- ``tools/analysis/benchmark.py`` builds its rows, checks a git-ref copy of the
  backbone against ours, prints the table, and its activation column shows
  ``with_cp`` keeping less for backward.
- ``torch.compile`` traces the backbone in one graph (no graph breaks), for
  a size that needs window padding too.
"""
import os.path as osp
import sys

import torch
from conftest import REPO

from lightvit_mm import LightViT

sys.path.insert(0, osp.join(REPO, 'tools', 'analysis'))
import benchmark  # noqa: E402


def test_benchmark_prints_rows_and_with_cp_keeps_less(capsys):
    benchmark.main(['--tables', 'backbones', '--models', 'RegNetX-800MF', '--device', 'cpu',
                    '--batch-size', '1', '--repeats', '1', '--warmup', '0', '--iters', '1',
                    '--ref', 'HEAD'])
    out = capsys.readouterr().out
    rows = {line.split(' | ')[0].lstrip('| '): line.split(' | ')
            for line in out.splitlines() if line.startswith('| ') and '---' not in line}
    assert set(rows) == {'model', 'LightViT-T', 'LightViT-T @ HEAD', 'LightViT-T (with_cp)',
                         'RegNetX-800MF'}
    activations = {name: float(cells[-1].rstrip(' |')) for name, cells in rows.items()
                   if name != 'model'}
    assert activations['LightViT-T (with_cp)'] < 0.5 * activations['LightViT-T']
    assert float(rows['LightViT-T'][1]) == 7.77  # params (M)


def test_backbone_compiles_without_graph_breaks():
    import torch._dynamo
    torch._dynamo.reset()
    model = LightViT(arch='tiny').eval()
    with torch.no_grad():
        report = torch._dynamo.explain(model)(torch.randn(1, 3, 100, 132))
    assert (report.graph_count, report.graph_break_count) == (1, 0), report.break_reasons


def test_compile_module_hook_compiles_the_backbone_in_place():
    from types import SimpleNamespace

    import pytest
    import torch._dynamo
    from mmengine.registry import HOOKS
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = torch.nn.Module()
    model.backbone = LightViT(arch='tiny').eval()
    keys = list(model.state_dict())
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        expected = model.backbone(x)
    hook = HOOKS.build(dict(type='CompileModuleHook', backend='eager'))
    hook.before_run(SimpleNamespace(model=model))
    assert list(model.state_dict()) == keys  # no '_orig_mod.' prefix
    assert model.backbone._compiled_call_impl is not None
    with torch.no_grad():
        for out, ref in zip(model.backbone(x), expected):
            torch.testing.assert_close(out, ref)
    with pytest.raises(AttributeError, match="no submodule 'neck'.*'backbone'"):
        HOOKS.build(dict(type='CompileModuleHook', module='neck')).before_run(
            SimpleNamespace(model=model))

"""The speed tooling works (no timings are asserted: speed lives in the benchmark).

- ``tools/analysis/benchmark.py`` builds its rows (deploy mode among them),
  checks a git-ref copy of the backbone against ours (outputs and
  gradients), prints the tables with GFLOP/s and the percentage of the GEMM
  peak of each row's precision for LightViT rows, and its activation column
  shows ``with_cp`` keeping less for backward. (Its deploy table's rows:
  tests/test_deploy/test_precision.py.)
- :class:`CompileModuleHook` compiles the backbone in place, and a compiled
  training step (one graph) gives the eager gradients.
- ``torch.compile`` traces the backbone in one graph (no graph breaks), for
  a size that needs window padding too.
"""
import pytest
import torch
import torch._dynamo
from conftest import backbone_grads, load_tool

from lightvit_mm import LightViT
from lightvit_mm.analysis.official_reference import OFFICIAL, check_same_outputs

benchmark = load_tool('tools/analysis/benchmark.py')


def table_cells(text):
    """The cells of each row (header first) of the Markdown table in ``text``."""
    return [line.split(' | ') for line in text.splitlines()
            if line.startswith('| ') and '---' not in line]


def test_benchmark_prints_rows_and_with_cp_keeps_less(capsys):
    benchmark.main(['--tables', 'lightvit', 'backbones', '--models', 'RegNetX-800MF',
                    '--device', 'cpu', '--batch-size', '1', '--repeats', '1', '--warmup', '0',
                    '--iters', '1', '--ref', 'HEAD'])
    out = capsys.readouterr().out
    tables = [table_cells(part) for part in out.split('\n\n') if part.startswith('| model')]
    rows = [{cells[0].lstrip('| '): cells for cells in t[1:]} for t in tables]
    assert [list(r) for r in rows] == [
        ['LightViT-T', 'LightViT-T (deploy)', 'LightViT-T @ HEAD'],  # 224x224
        ['LightViT-T', 'LightViT-T (deploy)', 'LightViT-T @ HEAD'],  # 512x512
        ['LightViT-T', 'LightViT-T (with_cp)', 'RegNetX-800MF']]
    assert 'fp32 GEMM 2048x2048 peak' in out
    header = tables[0][0]
    percent = header.index('% of GEMM peak infer / train')
    for cells in rows[0].values():  # LightViT rows: GFLOP/s and % of peak
        assert all(v.endswith('%') for v in cells[percent].split(' / ') if v != '-')
    assert rows[2]['RegNetX-800MF'][percent] == '- / -'
    activations = {name: float(cells[-1].rstrip(' |')) for name, cells in rows[2].items()}
    assert activations['LightViT-T (with_cp)'] < 0.5 * activations['LightViT-T']
    assert float(rows[2]['LightViT-T'][1]) == 7.77  # params (M)


def test_each_group_of_rows_is_divided_by_its_own_official_row():
    # Dense tables hold two models (Mask R-CNN, UPerNet), each with its own
    # official-code row; a row must not be divided by the other model's.
    from types import SimpleNamespace
    args = SimpleNamespace(device=torch.device('cpu'), amp='fp32')
    model, x = torch.nn.Linear(1, 1), torch.zeros(1, 1)
    rows = []
    for group, (ours, official) in {'A': (1.0, 2.0), 'B': (1.0, 4.0)}.items():
        base = benchmark.Bench(group, model, x, args, train=False)
        reference = benchmark.Bench(f'{group} {OFFICIAL}', model, x, args,
                                    train=False, base=base)
        base.times['infer'], reference.times['infer'] = [ours], [official]
        rows += [base, reference]
    peak = benchmark.GemmPeak(args, size=8)
    peak.times['infer'] = [1.0]
    lines = table_cells(benchmark.table(rows, args, {'fp32': peak}))
    column = lines[0].index('speed-up over official infer')
    assert {cells[0].lstrip('| '): cells[column] for cells in lines[1:]} == {
        'A': '2.00x', f'A {OFFICIAL}': '1.00x',
        'B': '4.00x', f'B {OFFICIAL}': '1.00x'}


def test_each_row_is_given_its_share_of_its_own_precisions_peak():
    # The deploy table's bf16 and int8 rows are compared with the bf16 and
    # int8 GEMM peaks, fp32 rows with the fp32 one.
    from types import SimpleNamespace

    from lightvit_mm.deploy.speed_rows import Row
    args = SimpleNamespace(device=torch.device('cpu'), amp='fp32')
    flop = 1e9  # per image
    rows = [benchmark.CallBench(f'row {p}', Row(lambda: None, p), 1, args, flop=flop)
            for p in ('fp32', 'bf16', 'int8')]
    peaks = {p: benchmark.CallBench(f'{p} GEMM', Row(lambda: None, p, 1e9), 1, args)
             for p in ('fp32', 'bf16', 'int8')}
    for bench, seconds in zip(rows, (1.0, 1.0, 1.0)):
        bench.times['infer'] = [seconds]  # 1 GFLOP/s each
    for bench, seconds in zip(peaks.values(), (0.5, 0.25, 0.1)):
        bench.times['infer'] = [seconds]  # peaks 2, 4 and 10 GFLOP/s
    lines = table_cells(benchmark.table(rows, args, peaks))
    column = lines[0].index('% of GEMM peak infer')
    assert {cells[0].lstrip('| '): cells[column] for cells in lines[1:]} == {
        'row fp32': '50%', 'row bf16': '25%', 'row int8': '10%'}
    assert lines[1][1] == '-'  # a row without a module has no parameter count


def test_reference_outputs_are_compared_without_tf32():
    # On a GPU, cuDNN's default TF32 convolutions alone put LightViT-T 1.3e-4
    # away from itself in fp32 (seen on an H100), past the check's 1e-4.
    flags = []

    class Recorder(torch.nn.Identity):
        def forward(self, x):
            flags.append((torch.backends.cudnn.allow_tf32,
                          torch.backends.cuda.matmul.allow_tf32))
            return x
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    try:
        check_same_outputs(Recorder(), Recorder(), torch.zeros(2), 'identity')
        assert flags == [(False, False)] * 2
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (
            True, True)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_activation_count_frees_the_activations():
    # Measuring must not keep what it measures: every row of a table is
    # measured in turn, and kept activations ran a GPU out of memory at batch 256.
    import gc
    from types import SimpleNamespace

    def live_tensor_bytes():
        gc.collect()
        return sum(t.untyped_storage().nbytes() for t in gc.get_objects()
                   if isinstance(t, torch.Tensor))
    args = SimpleNamespace(device=torch.device('cpu'), amp='fp32')
    bench = benchmark.Bench('LightViT-T', LightViT(arch='tiny'), torch.randn(2, 3, 64, 64), args)
    before = live_tensor_bytes()
    assert bench.activation_mb() > 1
    assert live_tensor_bytes() == before


def test_backbone_compiles_without_graph_breaks():
    torch._dynamo.reset()
    model = LightViT(arch='tiny').eval()
    with torch.no_grad():
        report = torch._dynamo.explain(model)(torch.randn(1, 3, 100, 132))
    assert (report.graph_count, report.graph_break_count) == (1, 0), report.break_reasons


def test_compile_module_hook_compiles_the_backbone_in_place():
    from types import SimpleNamespace

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


def test_compiled_training_step_gives_eager_gradients():
    # What CompileModuleHook does to a training run: dynamo and AOT autograd
    # trace the window attention's autograd.Function (autocast switched off
    # inside it) into one graph, and the gradients stay those of eager mode.
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = LightViT(arch='tiny', drop_path_rate=0.).train()
    model.init_weights()
    x = torch.randn(2, 3, 64, 96)
    _, eager = backbone_grads(model, x)
    _, compiled = backbone_grads(
        model, x, forward=torch.compile(model, backend='aot_eager', fullgraph=True))
    for name, grad in eager.items():
        torch.testing.assert_close(compiled[name], grad, rtol=1e-4, atol=1e-6, msg=name)

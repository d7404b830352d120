# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""Do the model tests catch real bugs? Inject each bug below into a copy of
the repository, run the model test files there, and print which tests fail.

Run by hand (not part of the suite: pytest collects only ``test_*.py``)::

    PYTHONPATH=$PWD .venv/bin/python tests/mutations.py            # all bugs
    PYTHONPATH=$PWD .venv/bin/python tests/mutations.py tanh_gelu  # some
    PYTHONPATH=$PWD .venv/bin/python tests/mutations.py --first    # stop at the first failure

Each bug is a plain text replacement in one file of ``lightvit_mm``; if the
code it targets has changed, the script says so (update the replacement).
The unmodified copy is run first and must pass, so that every failure below
is the bug's. Exit status 1 if any bug survives every test.
"""
import argparse
import os
import os.path as osp
import re
import shutil
import subprocess
import sys
import tempfile

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
BACKBONE = 'lightvit_mm/models/backbones/lightvit.py'
FPN = 'lightvit_mm/models/necks/lightvit_fpn.py'
WINDOW_ATTENTION = 'lightvit_mm/models/utils/window_attention.py'

#: name -> (description, file, [(text, replacement), ...])
MUTATIONS = {
    'broadcast_scale_doubled': (
        'global broadcast with twice the attention scale', BACKBONE,
        [('return F.scaled_dot_product_attention(q_img, k_glb, v_glb)',
          'return F.scaled_dot_product_attention(q_img, k_glb, v_glb, '
          'scale=2 * hd**-0.5)')]),
    'broadcast_values_as_keys': (
        'global broadcast attends with the values as keys', BACKBONE,
        [('F.scaled_dot_product_attention(q_img, k_glb, v_glb)',
          'F.scaled_dot_product_attention(q_img, v_glb, v_glb)')]),
    'norms_swapped': (
        'norm1 before the FFN, norm2 before the attention', BACKBONE,
        [('self.attn(self.norm1(x), hw_shape)', 'self.attn(self.norm2(x), hw_shape)'),
         ('self.mlp(self.norm2(x))', 'self.mlp(self.norm1(x))')]),
    'position_index_swapped': (
        'relative-position index with rows and columns swapped', WINDOW_ATTENTION,
        [('(rel[0] * (2 * window_size - 1) + rel[1])',
          '(rel[1] * (2 * window_size - 1) + rel[0])')]),
    'tanh_gelu': (
        'tanh approximation of GELU in the FFN', BACKBONE,
        [('self.fc2(F.gelu(self.fc1(x)))', "self.fc2(F.gelu(self.fc1(x), approximate='tanh'))")]),
    'fpn_top_down_dropped': (
        'FPN without the top-down addition', FPN,
        [('laterals[i - 1] = laterals[i - 1] + up', 'laterals[i - 1] = laterals[i - 1]')]),
    'fpn_finer_from_coarsest': (
        'FPN finer (transposed-conv) level from the coarsest lateral', FPN,
        [('source = laterals[0]', 'source = laterals[-1]')]),
    'spatial_gate_dropped': (
        'bi-dimensional attention without its spatial gate', BACKBONE,
        [('return x * (channel_gate * spatial_gate)', 'return x * channel_gate')]),
}

#: the test files of the model code (backbone, neck, their speed and export
#: paths), the quick reference-vector ones first (``--first`` stops early)
MODEL_TESTS = ['tests/test_models/test_neck.py', 'tests/test_models/test_window_attention.py',
               'tests/test_models/test_lightvit.py', 'tests/test_models/test_official_weights.py',
               'tests/test_deploy/test_export.py', 'tests/test_models/test_any_size.py']
IGNORED = shutil.ignore_patterns('.git', '.venv', '__pycache__', '.pytest_cache', 'work_dirs',
                                 'data', '*.egg-info', 'build', 'dist')


def copy_repository(dst):
    """The files the model tests need (package, tests and their data, tools,
    configs), without the venv and build outputs."""
    for name in ('lightvit_mm', 'tools', 'configs'):
        shutil.copytree(osp.join(REPO, name), osp.join(dst, name), ignore=IGNORED)
    shutil.copytree(osp.join(REPO, 'tests'), osp.join(dst, 'tests'),
                    ignore=shutil.ignore_patterns('__pycache__'))
    shutil.copy(osp.join(REPO, 'pyproject.toml'), dst)


def mutate(root, path, replacements):
    """Apply ``replacements`` to ``root/path``; each text must occur once."""
    with open(osp.join(root, path)) as f:
        source = f.read()
    for old, new in replacements:
        count = source.count(old)
        if count != 1:
            raise ValueError(f'{path}: expected {old!r} once, found it {count} times; '
                             'update the mutation to the current code')
        source = source.replace(old, new)
    with open(osp.join(root, path), 'w') as f:
        f.write(source)


def run_tests(root, first):
    """Failed test ids of the model tests run in ``root`` and pytest's summary."""
    env = dict(os.environ, PYTHONPATH=root, PYTHONDONTWRITEBYTECODE='1')
    cmd = [sys.executable, '-m', 'pytest', '-q', '-rf', '-p', 'no:cacheprovider', *MODEL_TESTS]
    if first:
        cmd.append('-x')
    run = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    failed = re.findall(r'^FAILED (\S+)', run.stdout, flags=re.M)
    summary = (run.stdout.strip().splitlines() or [''])[-1]
    if run.returncode not in (0, 1):
        raise RuntimeError(f'pytest exited with {run.returncode}:\n{run.stdout[-3000:]}'
                           f'{run.stderr[-3000:]}')
    return failed, summary


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('names', nargs='*', metavar='NAME',
                        help=f'bugs to inject (default: all): {", ".join(MUTATIONS)}')
    parser.add_argument('--first', action='store_true', help='stop each run at its first failure')
    parser.add_argument('--no-baseline', action='store_true',
                        help='skip the run of the unmodified copy')
    args = parser.parse_args(argv)
    names = args.names or list(MUTATIONS)
    unknown = sorted(set(names) - set(MUTATIONS))
    if unknown:
        parser.error(f'unknown bugs {unknown}; known: {", ".join(MUTATIONS)}')
    survivors = []
    with tempfile.TemporaryDirectory(prefix='lightvit_mm_mutations_') as tmp:
        if not args.no_baseline:
            root = osp.join(tmp, 'baseline')
            copy_repository(root)
            failed, summary = run_tests(root, first=False)
            print(f'baseline (no bug): {summary}', flush=True)
            if failed:
                sys.exit(f'the unmodified copy fails {failed}: fix that first')
        for name in names:
            description, path, replacements = MUTATIONS[name]
            root = osp.join(tmp, name)
            copy_repository(root)
            mutate(root, path, replacements)
            failed, summary = run_tests(root, args.first)
            print(f'{name} ({description}): {summary}', flush=True)
            for test in failed:
                print(f'    {test}')
            if not failed:
                survivors.append(name)
    if survivors:
        print(f'NOT CAUGHT: {survivors}')
        return 1
    print(f'all {len(names)} bugs caught')
    return 0


if __name__ == '__main__':
    sys.exit(main())

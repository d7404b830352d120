# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""``deploy.json``: what a deployed-model folder holds, and the checks made
before anything in such a folder is read.

A deployed-model folder is something people download and share, so
:func:`read_manifest` trusts nothing in it:

- ``deploy.json`` is plain JSON (no code runs), with a known
  ``format_version``, one of the known tasks and backends, and a known
  ``precision`` (fp32 where it has none);
- every file it names is a relative path that stays inside the folder
  (no absolute path, no ``..``, no symlink whose target lies outside), is a
  regular file, and has the sha256 written in ``deploy.json``;
- ONNX files: each tensor stored as external data names a file that passes
  the same checks (so ONNX Runtime reads nothing outside the folder);
- the graphs of the task and their files are all there.
"""
import hashlib
import json
import os
import os.path as osp
from typing import Dict, Iterable, Optional

from .precision import PRECISIONS

#: the ``format`` value of every deploy.json written by lightvit_mm
FORMAT = 'lightvit_mm.deploy'
#: bumped whenever a folder written by an older version can no longer be read
FORMAT_VERSION = 1
#: the file name of the manifest inside a deployed-model folder
MANIFEST = 'deploy.json'
#: tasks, as written in deploy.json, and the package whose models and data samples they use
TASKS = {
    'classification': 'mmpretrain',
    'segmentation': 'mmseg',
    'detection': 'mmdet',
    'instance-segmentation': 'mmdet',
}
BACKENDS = ('onnxruntime', 'openvino')


class DeployedFolderError(ValueError):
    """A deployed-model folder that is refused: missing or malformed
    ``deploy.json``, files outside the folder, wrong hashes, another task,
    an incompatible version."""


def sha256_of(path: str) -> str:
    """The sha256 hex digest of the file at ``path`` (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_inside(folder: str, name: str, what: str = 'file') -> str:
    """The real path of ``name`` (a path relative to ``folder``) after
    checking that it stays inside ``folder``.

    Raises:
        DeployedFolderError: ``name`` is not a non-empty relative path, holds
            ``..`` or a drive, or resolves (through symlinks) outside
            ``folder``.
    """
    if not isinstance(name, str) or not name:
        raise DeployedFolderError(f'{what}: expected a relative file name, got {name!r}')
    parts = name.replace('\\', '/').split('/')
    if osp.isabs(name) or name.startswith(('/', '\\')) or ':' in parts[0] or '..' in parts:
        raise DeployedFolderError(
            f'{what} {name!r}: only paths relative to the deployed folder, without "..", '
            'are accepted')
    root = osp.realpath(folder)
    path = osp.realpath(osp.join(root, name))
    if osp.commonpath([root, path]) != root:
        raise DeployedFolderError(
            f'{what} {name!r} resolves to {path}, outside the deployed folder {root} '
            '(a symlink?); refused')
    return path


def check_files(folder: str, files: Dict[str, str]) -> None:
    """Check that each ``files`` entry (relative name -> sha256) is a regular
    file inside ``folder`` with that hash.

    Raises:
        DeployedFolderError: a name escapes the folder, a file is missing or
            not a regular file, or a hash differs.
    """
    if not isinstance(files, dict) or not files:
        raise DeployedFolderError(f'{MANIFEST}: "files" must map file names to sha256 hashes')
    for name, expected in files.items():
        path = resolve_inside(folder, name)
        if not osp.isfile(path):
            raise DeployedFolderError(f'{name}: listed in {MANIFEST} but not a file in {folder}')
        got = sha256_of(path)
        if got != expected:
            raise DeployedFolderError(
                f'{name}: sha256 {got} does not match {expected} in {MANIFEST}; the file was '
                'changed or replaced after export (re-export, or get the folder again)')


def _onnx_tensors(graph) -> Iterable:
    """Every TensorProto of an ONNX graph: initializers, sparse initializers and
    tensor attributes of nodes, in subgraphs too."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField('t'):
                yield attr.t
            yield from attr.tensors
            if attr.HasField('g'):
                yield from _onnx_tensors(attr.g)
            for sub in attr.graphs:
                yield from _onnx_tensors(sub)


def check_onnx_external_data(folder: str, onnx_name: str, files: Dict[str, str]) -> None:
    """Check that every external-data location of the ONNX file ``onnx_name``
    is a file of ``folder`` listed (hashed) in ``files``.

    The ONNX file is parsed without loading its external data; ONNX Runtime
    would otherwise open whatever path a tensor's ``location`` names.

    Raises:
        DeployedFolderError: a location is absolute, holds ``..``, escapes the
            folder or is not listed in deploy.json.
    """
    import onnx
    model = onnx.load(resolve_inside(folder, onnx_name), load_external_data=False)
    listed = {resolve_inside(folder, name) for name in files}
    for tensor in _onnx_tensors(model.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = {e.key: e.value for e in tensor.external_data}.get('location')
        what = f'{onnx_name}: external data of tensor {tensor.name!r}'
        path = resolve_inside(osp.dirname(resolve_inside(folder, onnx_name)), location or '',
                              what)
        if osp.commonpath([osp.realpath(folder), path]) != osp.realpath(folder):
            raise DeployedFolderError(f'{what} ({location!r}) lies outside the deployed folder')
        if path not in listed:
            raise DeployedFolderError(
                f'{what} ({location!r}) is not listed with its sha256 in {MANIFEST}; refused')


def write_manifest(folder: str, manifest: dict) -> str:
    """Write ``manifest`` as ``folder/deploy.json`` (via a temporary file, so
    it is never half-written); return its path."""
    path = osp.join(folder, MANIFEST)
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(manifest, f, indent=2)
    os.replace(tmp, path)
    return path


def read_manifest(folder: str, task: Optional[str] = None) -> dict:
    """Read and check ``folder/deploy.json`` and the files it names (module
    docstring); nothing in the folder is loaded or run.

    Args:
        folder (str): The deployed-model folder (``export.py --work-dir``).
        task (str, optional): Refuse a folder made for another task (one of
            :data:`TASKS`). Defaults to None: any task.

    Returns:
        dict: The manifest.

    Raises:
        DeployedFolderError: see the module docstring; the message says what
            was wrong.
    """
    if not osp.isdir(folder):
        raise DeployedFolderError(f'{folder} is not a folder (expected the --work-dir of '
                                  'tools/deployment/export.py)')
    path = resolve_inside(folder, MANIFEST)
    if not osp.isfile(path):
        raise DeployedFolderError(f'{folder} has no {MANIFEST}: not a deployed-model folder')
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise DeployedFolderError(f'{path} is not valid JSON: {e}') from None
    if not isinstance(manifest, dict) or manifest.get('format') != FORMAT:
        raise DeployedFolderError(f'{path} is not a lightvit_mm deploy.json '
                                  f'(its "format" is not {FORMAT!r})')
    version = manifest.get('format_version')
    if version != FORMAT_VERSION:
        raise DeployedFolderError(
            f'{path} has format_version {version!r}; this lightvit_mm reads only version '
            f'{FORMAT_VERSION} (made by an incompatible lightvit_mm version: export again)')
    if manifest.get('task') not in TASKS:
        raise DeployedFolderError(f'{path}: unknown task {manifest.get("task")!r}; '
                                  f'expected one of {list(TASKS)}')
    if task is not None and manifest['task'] != task:
        raise DeployedFolderError(f'{folder} was exported for the task {manifest["task"]!r}, '
                                  f'not {task!r}')
    if manifest.get('backend') not in BACKENDS:
        raise DeployedFolderError(f'{path}: unknown backend {manifest.get("backend")!r}; '
                                  f'expected one of {list(BACKENDS)}')
    if manifest.get('precision', 'fp32') not in PRECISIONS:  # older folders: fp32
        raise DeployedFolderError(f'{path}: unknown precision {manifest.get("precision")!r}; '
                                  f'expected one of {list(PRECISIONS)}')
    graphs = manifest.get('graphs')
    if not isinstance(graphs, dict) or not graphs:
        raise DeployedFolderError(f'{path}: "graphs" is missing or empty')
    files = manifest.get('files')
    check_files(folder, files)
    for name, graph in graphs.items():
        model_files = graph.get('files') if isinstance(graph, dict) else None
        if not isinstance(model_files, list) or not model_files:
            raise DeployedFolderError(f'{path}: graph {name!r} names no model file')
        for file in model_files:
            if file not in files:
                raise DeployedFolderError(f'{path}: graph {name!r} file {file!r} is not '
                                          'listed with its sha256 in "files"')
            if file.endswith('.onnx'):
                check_onnx_external_data(folder, file, files)
    return manifest

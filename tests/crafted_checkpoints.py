# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""Crafted checkpoint files that try to escape weights-only loading.

Each is a protocol-2 pickle written opcode by opcode and packed in torch's
zip format, named like a real checkpoint. ``ATTACKS`` maps a name to
``(builder, refusal)``: ``builder(marker)`` returns the pickle bytes (the
payload would create the file ``marker``), ``refusal`` is a regular
expression that the refusal message must match, naming the step refused.
"""
import struct

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
    """A float dtype whose state (BUILD) claims object fields and flags, then
    an array whose raw bytes would be read as object pointers."""
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

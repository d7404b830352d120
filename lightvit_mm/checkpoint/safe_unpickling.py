# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""What a checkpoint may build when it is read weights-only.

torch >= 2.6 reads files with ``torch.load(weights_only=True)`` by default: the
unpickler builds tensors, containers and plain values, and calls only the
globals that torch allows plus those given to
``torch.serialization.add_safe_globals``. A checkpoint written by mmengine
0.10's ``Runner`` needs more: the message hub's ``HistoryBuffer`` objects, the
numpy arrays and scalars they hold, and ``builtins.getattr``, through which
pickle protocol 2 refers to the methods ``HistoryBuffer.min`` / ``max`` /
``current`` / ``mean`` stored in every buffer's state.

Allow-listing those objects as they are would hand a file far more than it
needs. The unpickler calls an allow-listed callable with arguments taken from
the file, and BUILD passes the file's state to the object's ``__setstate__``:

- ``getattr(x, name)`` reaches anything: ``getattr.__self__`` is the
  ``builtins`` module, a function's ``__globals__`` is its module's dict
  (which SETITEM may then overwrite), ``().__class__.__subclasses__`` walks
  every class in the process;
- ``HistoryBuffer.__setstate__`` copies any ``__dict__`` the file sends and
  merges its ``statistics_methods`` into the class-wide table that the logger
  calls later;
- numpy's ``dtype.__setstate__`` accepts fields and flags, so a float dtype can
  be made to claim that it holds Python objects; an array read with it would
  take the file's bytes for object pointers.

So every name a checkpoint uses is mapped (``add_safe_globals`` accepts
``(object, "module.name")`` pairs) to a checked stand-in that accepts exactly
what mmengine writes and raises :class:`UnsafeCheckpointError` otherwise:

============================================  ================================
name in the file                              accepted
============================================  ================================
``builtins.getattr``                          :func:`checked_getattr`: only
                                              ``getattr(HistoryBuffer, m)`` for
                                              its statistics methods ``m``
``mmengine.logging.history_buffer.``          :class:`CheckedHistoryBuffer`:
``HistoryBuffer``                             the state keys ``max_length``
                                              (int), ``_log_history``,
                                              ``_count_history`` (1-D numeric
                                              arrays) and
                                              ``statistics_methods`` (only the
                                              class's own methods); becomes a
                                              plain ``HistoryBuffer``
``numpy.ndarray``                             :class:`CheckedArray`: numeric
                                              dtype, bytes matching the shape
``numpy{,._core,.core}.multiarray.``          :func:`checked_reconstruct`:
``_reconstruct``                              only numpy's own empty
                                              placeholder ``(ndarray, (0,),
                                              b'b')``
``numpy{,._core,.core}.multiarray.scalar``    :func:`checked_scalar`: numeric
                                              dtype and its exact bytes
``numpy.dtype``                               :func:`checked_dtype`: a
                                              numeric type code; always a new
                                              dtype object, never numpy's
                                              shared one
numeric dtype classes (``numpy.dtypes.``      themselves (no-argument
``Float64DType``, ...)                        constructors; their instances
                                              are re-checked wherever an array
                                              or scalar uses them)
============================================  ================================

Numeric means booleans, signed and unsigned integers, floats and complex
numbers (dtype kinds ``b i u f c``), without fields, sub-arrays or object
flags. Nothing else beyond torch's own defaults is added.

:func:`register_safe_globals` adds these pairs to torch's allow-list for the
whole process; ``import lightvit_mm`` calls it, so mmengine's
``load_checkpoint`` (``load_from``, ``resume``, the Inferencers, ``init_detector``,
``init_model``, ``get_model``) reads mmengine checkpoints with safe loading
still on. Set the environment variable ``LIGHTVIT_MM_SAFE_GLOBALS=0`` before
the import to leave torch's allow-list untouched.
"""
import inspect
import math
import os
import pickle
from typing import Any, List, Tuple

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

#: kinds of numpy dtypes a checkpoint may hold: bool, int, uint, float, complex
NUMERIC_KINDS = 'biufc'
#: the state keys mmengine 0.10 writes for a HistoryBuffer
HISTORY_BUFFER_KEYS = frozenset({'max_length', '_log_history', '_count_history',
                                 'statistics_methods'})
#: statistics methods HistoryBuffer always registers
DEFAULT_STATISTICS = ('min', 'max', 'current', 'mean')


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint asked the weights-only unpickler for something that
    mmengine checkpoints never hold (``torch.load`` reports it as a refused
    weights-only load)."""


def _describe(obj: Any) -> str:
    """A short, safe description of an object for error messages."""
    if isinstance(obj, type):
        return f'class {obj.__module__}.{obj.__qualname__}'
    if inspect.ismodule(obj):
        return f'module {obj.__name__}'
    if callable(obj):
        return f'{type(obj).__name__} {getattr(obj, "__qualname__", "?")}'
    return f'a {type(obj).__name__}'


def _statistics_names() -> Tuple[str, ...]:
    """HistoryBuffer's statistics methods that are defined on the class
    itself (only those are pickled as ``getattr(HistoryBuffer, name)``)."""
    names = set(DEFAULT_STATISTICS) | set(HistoryBuffer._statistics_methods)
    return tuple(sorted(n for n in names if inspect.isfunction(vars(HistoryBuffer).get(n))))


def checked_getattr(obj: Any, name: Any, *default: Any) -> Any:
    """Stand-in for ``builtins.getattr`` in checkpoints.

    Returns ``HistoryBuffer.<name>`` for a statistics method ``name`` of
    mmengine's ``HistoryBuffer`` (``min``, ``max``, ``current``, ``mean`` and
    any registered method defined on the class).

    Raises:
        UnsafeCheckpointError: any other object, attribute or a default
            argument; the message names the object and the attribute.
    """
    if (not default and type(name) is str
            and any(obj is cls for cls in (HistoryBuffer, CheckedHistoryBuffer))
            and name in _statistics_names()):
        return vars(HistoryBuffer)[name]
    raise UnsafeCheckpointError(
        f'refused getattr({_describe(obj)}, {name!r}): a checkpoint may only name '
        f'the statistics methods of mmengine HistoryBuffer {list(_statistics_names())}')


def _numeric_dtype(dtype: Any, what: str) -> np.dtype:
    """A fresh numeric dtype equal to ``dtype``, or UnsafeCheckpointError."""
    if (not isinstance(dtype, np.dtype) or dtype.kind not in NUMERIC_KINDS
            or dtype.fields is not None or dtype.subdtype is not None or dtype.hasobject):
        raise UnsafeCheckpointError(
            f'refused {what} of dtype {dtype!r}: checkpoints may only hold numeric '
            f'numpy data (kinds {NUMERIC_KINDS!r}, no fields, no objects)')
    fresh = np.dtype(dtype.str)
    if fresh.itemsize != dtype.itemsize:
        raise UnsafeCheckpointError(f'refused {what}: dtype {dtype!r} has itemsize '
                                    f'{dtype.itemsize}, expected {fresh.itemsize}')
    return fresh


def checked_dtype(spec: Any, align: Any = False, copy: Any = False) -> np.dtype:
    """Stand-in for ``numpy.dtype`` in checkpoints: ``numpy.dtype(spec)`` for a
    numeric type code such as ``'f8'`` or ``'<i4'``, always as a new object
    (so the BUILD that follows in the file cannot alter numpy's shared
    dtypes).

    Raises:
        UnsafeCheckpointError: ``spec`` is not a string naming a numeric dtype,
            or ``align`` is set.
    """
    if type(spec) is not str or align not in (False, 0):
        raise UnsafeCheckpointError(f'refused numpy.dtype({spec!r}, align={align!r}): '
                                    'only numeric type codes such as "f8" are accepted')
    try:
        dtype = np.dtype(spec)
    except TypeError as error:
        raise UnsafeCheckpointError(f'refused numpy.dtype({spec!r}): {error}') from None
    dtype = np.dtype(dtype, copy=True)
    _numeric_dtype(dtype, f'numpy.dtype({spec!r})')
    return dtype


def checked_scalar(dtype: Any, data: Any) -> np.generic:
    """Stand-in for numpy's ``multiarray.scalar``: a numeric numpy scalar
    from its dtype and exactly ``dtype.itemsize`` bytes.

    Raises:
        UnsafeCheckpointError: a non-numeric dtype, or data that are not bytes
            of the dtype's size.
    """
    dtype = _numeric_dtype(dtype, 'numpy scalar')
    if type(data) is not bytes or len(data) != dtype.itemsize:
        raise UnsafeCheckpointError(f'refused numpy scalar of {dtype}: expected '
                                    f'{dtype.itemsize} bytes, got {_describe(data)}')
    return np.frombuffer(data, dtype=dtype)[0].copy()


class CheckedArray(np.ndarray):
    """Stand-in for ``numpy.ndarray`` in checkpoints: an ndarray subclass
    whose ``__setstate__`` accepts numpy's array state ``(version, shape,
    dtype, is_fortran, data)`` only for a numeric dtype and ``data`` bytes of
    exactly the size the shape needs. Arrays read from a checkpoint are of
    this type (an ``np.ndarray`` in every other respect); inside a
    ``HistoryBuffer`` they become plain arrays.

    Raises:
        UnsafeCheckpointError: any other state.
    """

    def __setstate__(self, state):
        if type(state) is not tuple or len(state) != 5:
            raise UnsafeCheckpointError(f'refused numpy array state {_describe(state)}')
        version, shape, dtype, is_fortran, data = state
        if (type(shape) is not tuple or not all(type(n) is int and n >= 0 for n in shape)
                or type(version) is not int or type(is_fortran) is not bool):
            raise UnsafeCheckpointError(f'refused numpy array state with shape {shape!r}')
        dtype = _numeric_dtype(dtype, 'numpy array')
        if type(data) is not bytes or len(data) != math.prod(shape) * dtype.itemsize:
            raise UnsafeCheckpointError(
                f'refused numpy array {shape} of {dtype}: its data must be '
                f'{math.prod(shape) * dtype.itemsize} bytes, got {_describe(data)}')
        super().__setstate__((version, shape, dtype, is_fortran, data))


def checked_reconstruct(subtype: Any, shape: Any, dtype: Any) -> CheckedArray:
    """Stand-in for numpy's ``multiarray._reconstruct``: the empty array that
    numpy's pickles create before BUILD fills it, ``(ndarray, (0,), b'b')``.

    Raises:
        UnsafeCheckpointError: any other arguments.
    """
    if not (subtype is CheckedArray and shape == (0,) and type(shape) is tuple
            and dtype in (b'b', 'b')):
        raise UnsafeCheckpointError(
            f'refused numpy _reconstruct({_describe(subtype)}, {shape!r}, {dtype!r})')
    return np.ndarray.__new__(CheckedArray, (0,), 'b')


class CheckedHistoryBuffer(HistoryBuffer):
    """Stand-in for mmengine's ``HistoryBuffer`` in checkpoints. Its
    ``__setstate__`` accepts the state mmengine 0.10 writes and turns the
    object into a plain ``HistoryBuffer``; the file cannot add attributes or
    statistics methods.

    Raises:
        UnsafeCheckpointError: unexpected state keys, a ``max_length`` that is
            not a positive int, histories that are not 1-D numeric arrays, or
            statistics methods that are not the class's own.
    """

    def __setstate__(self, state):
        if type(state) is not dict:
            raise UnsafeCheckpointError(f'refused HistoryBuffer state: {_describe(state)}, '
                                        'not a dict')
        unexpected = sorted(map(repr, set(state) - HISTORY_BUFFER_KEYS))
        if unexpected:
            raise UnsafeCheckpointError(
                f'refused HistoryBuffer state: unexpected keys [{", ".join(unexpected)}]; '
                f'accepted keys are {sorted(HISTORY_BUFFER_KEYS)}')
        max_length = state.get('max_length', 1000000)
        if type(max_length) is not int or max_length <= 0:
            raise UnsafeCheckpointError(f'refused HistoryBuffer max_length {max_length!r}')
        histories = {}
        for key in ('_log_history', '_count_history'):
            value = state.get(key, np.array([]))
            if not isinstance(value, np.ndarray) or value.ndim != 1:
                raise UnsafeCheckpointError(
                    f'refused HistoryBuffer {key}: expected a 1-D numpy array, '
                    f'got {_describe(value)}')
            histories[key] = np.array(value, dtype=_numeric_dtype(value.dtype, key))
        methods = state.get('statistics_methods', {})
        if type(methods) is not dict or not all(
                type(k) is str and k in _statistics_names() and v is vars(HistoryBuffer)[k]
                for k, v in methods.items()):
            raise UnsafeCheckpointError(
                'refused HistoryBuffer statistics_methods: only the class\'s own '
                f'{list(_statistics_names())} are accepted')
        self.__class__ = HistoryBuffer
        self._set_default_statistics()
        self.__dict__.update(max_length=max_length, **histories)


def _numpy_dtype_classes() -> List[type]:
    """numpy's numeric dtype classes (``numpy.dtypes.Float64DType``, ...)."""
    classes = []
    for cls in vars(getattr(np, 'dtypes', object)).values():
        if isinstance(cls, type) and issubclass(cls, np.dtype) and cls is not np.dtype:
            try:
                kind = cls().kind
            except TypeError:  # parametric classes (datetime, strings, void) need arguments
                continue
            if kind in NUMERIC_KINDS:
                classes.append(cls)
    return classes


def safe_globals() -> List[Any]:
    """The ``add_safe_globals`` entries (objects and ``(object, name)``
    pairs) that mmengine 0.10 checkpoints need; see the module docstring for
    what each accepts."""
    entries: List[Any] = [(checked_getattr, 'builtins.getattr'),
                          (CheckedHistoryBuffer, 'mmengine.logging.history_buffer.HistoryBuffer'),
                          (CheckedArray, 'numpy.ndarray'),
                          (checked_dtype, 'numpy.dtype')]
    # numpy 2 writes numpy._core.multiarray, numpy 1 numpy.core.multiarray.
    for module in ('numpy._core.multiarray', 'numpy.core.multiarray'):
        entries += [(checked_reconstruct, f'{module}._reconstruct'),
                    (checked_scalar, f'{module}.scalar')]
    entries += _numpy_dtype_classes()
    return entries


def register_safe_globals() -> bool:
    """Add :func:`safe_globals` to torch's weights-only allow-list for this
    process, unless ``LIGHTVIT_MM_SAFE_GLOBALS=0`` is set.

    Returns:
        bool: Whether the entries were added.
    """
    if os.environ.get('LIGHTVIT_MM_SAFE_GLOBALS', '1') == '0':
        return False
    torch.serialization.add_safe_globals(safe_globals())
    return True

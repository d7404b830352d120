# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""Inference precisions of a deployed model (fp32, bf16, int8) and what the
CPU has for them.

bf16 is worth running only on CPUs with bf16 matrix units: Intel AMX
(``amx_bf16``, Sapphire Rapids and later) or ``avx512_bf16`` (Cooper Lake,
AMD Zen 4 and later). Elsewhere the runtimes emulate it or fall back to fp32,
and it is slower than fp32. int8 is fast with int8 dot-product instructions
(``amx_int8``, ``avx512_vnni``, ``avx_vnni``); without them it still runs
(OpenVINO and ONNX Runtime have AVX2 int8 kernels) but gains little.

What each runtime does with a precision (``deploy.json``'s ``precision``):

=========== ======================================= =========================================
precision   OpenVINO (CPU plugin)                   ONNX Runtime (CPU provider)
=========== ======================================= =========================================
fp32        ``INFERENCE_PRECISION_HINT='f32'``      as exported
bf16        ``INFERENCE_PRECISION_HINT='bf16'``     refused: no bf16 inference on x86 (its only
            where the CPU has bf16 units, else      bf16 option, ``mlas.enable_gemm_fastmath_
            fp32 with a warning (the plugin itself  arm64_bfloat16``, is for ARM64 CPUs)
            would silently do the same)
int8        IR quantized by NNCF (FakeQuantize);    QDQ graph quantized by ONNX Runtime's
            the other operations in f32             ``quantize_static``
=========== ======================================= =========================================

The capability checks read ``/proc/cpuinfo`` (Linux), torch's
``torch.backends.cpu.get_cpu_capability()`` and OpenVINO's
``OPTIMIZATION_CAPABILITIES`` of its CPU device (what the plugin will run:
it lists ``BF16`` only where it has bf16 kernels for the CPU).
"""
import functools
import warnings
from dataclasses import dataclass
from typing import Optional, Tuple

#: the precisions a deployed model can be exported in (``export.py --precision``)
PRECISIONS = ('fp32', 'bf16', 'int8')
#: /proc/cpuinfo flags of bf16 matrix / dot-product units
BF16_FLAGS = ('amx_bf16', 'avx512_bf16')
#: /proc/cpuinfo flags of int8 dot-product units
INT8_FLAGS = ('amx_int8', 'avx512_vnni', 'avx_vnni')
#: the /proc/cpuinfo flags reported (benchmark, docs, warnings)
RELEVANT_FLAGS = ('avx2', 'fma', 'avx512f', 'avx512_vnni', 'avx_vnni', 'avx512_bf16',
                  'avx512_fp16', 'amx_tile', 'amx_bf16', 'amx_int8')


@dataclass(frozen=True)
class CpuCapabilities:
    """What this machine's CPU offers for low-precision inference.

    Attributes:
        model_name (str): /proc/cpuinfo's ``model name`` ('' where unknown).
        flags (tuple[str]): The :data:`RELEVANT_FLAGS` the CPU reports.
        torch_capability (str): ``torch.backends.cpu.get_cpu_capability()``
            ('AVX2', 'AVX512', ...).
        openvino (tuple[str], optional): OpenVINO's
            ``OPTIMIZATION_CAPABILITIES`` of the CPU device (e.g. ``('FP32',
            'INT8', 'BIN', 'EXPORT_IMPORT')``, with ``'BF16'`` where the plugin
            runs bf16); None where OpenVINO is not installed.
    """
    model_name: str
    flags: Tuple[str, ...]
    torch_capability: str
    openvino: Optional[Tuple[str, ...]] = None

    @property
    def bf16_units(self) -> bool:
        """True where the CPU has bf16 matrix units (:data:`BF16_FLAGS`)."""
        return any(flag in self.flags for flag in BF16_FLAGS)

    @property
    def int8_units(self) -> bool:
        """True where the CPU has int8 dot-product units (:data:`INT8_FLAGS`)."""
        return any(flag in self.flags for flag in INT8_FLAGS)

    def runs_bf16(self, backend: str) -> bool:
        """Whether ``backend`` runs bf16 on this CPU: 'openvino' where its CPU
        plugin lists ``BF16`` (or, OpenVINO not installed, where the CPU has
        bf16 units), 'pytorch' where the CPU has bf16 units, 'onnxruntime'
        never (module docstring).

        Raises:
            ValueError: an unknown backend.
        """
        if backend == 'openvino':
            return 'BF16' in self.openvino if self.openvino is not None else self.bf16_units
        if backend == 'pytorch':
            return self.bf16_units
        if backend == 'onnxruntime':
            return False
        raise ValueError(f'unknown backend {backend!r}; expected openvino, onnxruntime or '
                         'pytorch')

    def describe(self) -> str:
        """One line: model name, relevant flags, torch's and OpenVINO's view."""
        flags = ' '.join(self.flags) or 'none of ' + ' '.join(RELEVANT_FLAGS)
        text = f'{self.model_name or "unknown CPU"}; flags: {flags}; torch: ' \
               f'{self.torch_capability}'
        if self.openvino is not None:
            text += f'; OpenVINO CPU: {" ".join(self.openvino)}'
        return text


def parse_cpuinfo(text: str) -> Tuple[str, Tuple[str, ...]]:
    """(model name, relevant flags) of the first processor in the text of
    ``/proc/cpuinfo``; ('', ()) where it has neither."""
    model_name, flags = '', ()
    for line in text.splitlines():
        key, _, value = line.partition(':')
        key = key.strip()
        if key == 'model name' and not model_name:
            model_name = value.strip()
        elif key == 'flags' and not flags:
            present = set(value.split())
            flags = tuple(flag for flag in RELEVANT_FLAGS if flag in present)
    return model_name, flags


def openvino_capabilities() -> Optional[Tuple[str, ...]]:
    """OpenVINO's ``OPTIMIZATION_CAPABILITIES`` of the CPU device, or None
    where OpenVINO is not installed."""
    try:
        import openvino as ov
    except ImportError:
        return None
    return tuple(ov.Core().get_property('CPU', 'OPTIMIZATION_CAPABILITIES'))


@functools.lru_cache(maxsize=1)
def cpu_capabilities() -> CpuCapabilities:
    """This machine's :class:`CpuCapabilities` (read once per process)."""
    import torch
    try:
        with open('/proc/cpuinfo') as f:
            model_name, flags = parse_cpuinfo(f.read())
    except OSError:  # not Linux: OpenVINO's and torch's view only
        model_name, flags = '', ()
    return CpuCapabilities(model_name, flags, torch.backends.cpu.get_cpu_capability(),
                           openvino_capabilities())


def check_precision(precision: str, backend: str,
                    capabilities: Optional[CpuCapabilities] = None) -> None:
    """Check an export's precision against its backend and this CPU
    (``export.py --precision``).

    - 'fp32': always accepted.
    - 'bf16' with 'onnxruntime': refused (no bf16 inference on x86 CPUs).
    - 'bf16' with 'openvino' on a CPU without bf16 units: accepted with a
      warning (the folder may be meant for another machine): ``deploy.json``
      records 'bf16', a machine with bf16 units runs it in bf16, this one in
      fp32, so the export's check against PyTorch here compares fp32.
    - 'int8' on a CPU without int8 dot-product units: accepted with a warning
      (it runs, at about fp32 speed).

    Args:
        precision (str): One of :data:`PRECISIONS`.
        backend (str): 'onnxruntime' or 'openvino'.
        capabilities (CpuCapabilities, optional): Defaults to
            :func:`cpu_capabilities`.

    Raises:
        ValueError: an unknown precision, or bf16 for ONNX Runtime.
    """
    if precision not in PRECISIONS:
        raise ValueError(f'unknown precision {precision!r}; expected one of {list(PRECISIONS)}')
    if precision == 'fp32':
        return
    if precision == 'bf16' and backend == 'onnxruntime':
        raise ValueError(
            'bf16 is not offered for ONNX Runtime: its CPU provider has no bf16 inference on '
            'x86 (its one bf16 option, mlas.enable_gemm_fastmath_arm64_bfloat16, is for ARM64 '
            'CPUs); export with --backend openvino --precision bf16, or int8 for ONNX Runtime')
    caps = capabilities or cpu_capabilities()
    if precision == 'bf16' and not caps.runs_bf16(backend):
        warnings.warn(
            f'this CPU has no bf16 matrix units (it lacks {" and ".join(BF16_FLAGS)}: '
            f'{caps.describe()}); the folder records precision bf16 and runs in bf16 on a CPU '
            'that has them, in fp32 here (bf16 would be slower than fp32 on this one), so the '
            'check against PyTorch below compares fp32', stacklevel=2)
    if precision == 'int8' and not caps.int8_units:
        warnings.warn(
            f'this CPU has no int8 dot-product units ({", ".join(INT8_FLAGS)}: '
            f'{caps.describe()}); the int8 model runs, but about as fast as fp32 here',
            stacklevel=2)


def runtime_precision(precision: str, backend: str,
                      capabilities: Optional[CpuCapabilities] = None) -> str:
    """The precision a deployed folder of ``precision`` runs in on this CPU:
    'bf16' falls back to 'fp32' with a warning where ``backend`` does not run
    bf16 here (:meth:`CpuCapabilities.runs_bf16`); the others run as they are.

    Raises:
        ValueError: an unknown precision.
    """
    if precision not in PRECISIONS:
        raise ValueError(f'unknown precision {precision!r}; expected one of {list(PRECISIONS)}')
    if precision != 'bf16':
        return precision
    caps = capabilities or cpu_capabilities()
    if caps.runs_bf16(backend):
        return 'bf16'
    warnings.warn(f'this deployed model was exported for bf16, but {backend} runs no bf16 on '
                  f'this CPU ({caps.describe()}); running it in fp32', stacklevel=2)
    return 'fp32'


def openvino_hint(precision: str) -> str:
    """OpenVINO's ``INFERENCE_PRECISION_HINT`` for a runtime precision (of
    :func:`runtime_precision`): 'bf16' for bf16, else 'f32' (an int8 IR's
    FakeQuantize-d operations run in int8 whatever the hint; the rest in f32)."""
    return 'bf16' if precision == 'bf16' else 'f32'

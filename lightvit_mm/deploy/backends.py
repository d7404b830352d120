# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""The two inference runtimes a graph of a deployed model runs in: ONNX
Runtime (the ``.onnx`` file) and OpenVINO (``.xml`` + ``.bin`` IR converted
from it), on the CPU (precisions: :mod:`lightvit_mm.deploy.precision`).

Each wrapper takes numpy float32 arrays in the graph's input order and
returns numpy arrays in its output order. Files are opened only by the paths
given (checked by :mod:`lightvit_mm.deploy.manifest` before); no custom-op
library or extension is ever loaded.
"""
import os.path as osp
from typing import List, Sequence

import numpy as np


def backend_versions(backend: str) -> dict:
    """Versions of onnx and of ``backend`` ('onnxruntime' or 'openvino')."""
    import onnx
    versions = {'onnx': onnx.__version__}
    if backend == 'onnxruntime':
        import onnxruntime
        versions['onnxruntime'] = onnxruntime.__version__
    else:
        import openvino
        versions['openvino'] = openvino.__version__
    return versions


class ONNXRuntimeGraph:
    """One ONNX graph in an ``onnxruntime.InferenceSession`` (CPU provider).

    Args:
        path (str): The ``.onnx`` file (its external data lies beside it).
        num_threads (int): Intra-op threads; 0 lets ONNX Runtime choose.
    """

    def __init__(self, path: str, num_threads: int = 0):
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads
        options.log_severity_level = 3
        self.session = ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])
        self.input_names = [i.name for i in self.session.get_inputs()]

    def __call__(self, inputs: Sequence[np.ndarray]) -> List[np.ndarray]:
        return self.session.run(None, dict(zip(self.input_names, inputs)))


class OpenVINOGraph:
    """One OpenVINO IR (``.xml`` + ``.bin``) compiled for the CPU plugin with
    the inference precision of ``precision`` (fp32 by default; the plugin's
    own default is bf16 on machines with AMX).

    Args:
        xml (str): The IR's ``.xml``.
        bin (str): Its ``.bin`` weights.
        num_threads (int): Inference threads; 0 lets OpenVINO choose.
        precision (str): The runtime precision, 'fp32', 'bf16' or 'int8'
            (:func:`lightvit_mm.deploy.precision.openvino_hint`). Defaults to 'fp32'.
    """

    def __init__(self, xml: str, bin: str, num_threads: int = 0, precision: str = 'fp32'):
        import openvino as ov

        from .precision import openvino_hint
        core = ov.Core()
        model = core.read_model(xml, bin)
        config = {'INFERENCE_PRECISION_HINT': openvino_hint(precision)}
        if num_threads:
            config['INFERENCE_NUM_THREADS'] = num_threads
        self.compiled = core.compile_model(model, 'CPU', config)
        self.request = self.compiled.create_infer_request()

    def __call__(self, inputs: Sequence[np.ndarray]) -> List[np.ndarray]:
        results = self.request.infer(list(inputs))
        return [np.array(results[out]) for out in self.compiled.outputs]


def convert_onnx_to_openvino(onnx_path: str, xml_path: str) -> List[str]:
    """Convert an ONNX file to OpenVINO IR in fp32 (no fp16 compression);
    return the IR's file paths (``.xml``, ``.bin``)."""
    import openvino as ov
    model = ov.convert_model(onnx_path)
    ov.save_model(model, xml_path, compress_to_fp16=False)
    return [xml_path, osp.splitext(xml_path)[0] + '.bin']


def open_graph(backend: str, paths: Sequence[str], num_threads: int = 0,
               precision: str = 'fp32'):
    """The runtime wrapper of one graph: ``paths`` is ``[onnx]`` for
    'onnxruntime', ``[xml, bin]`` for 'openvino'; ``precision`` sets
    OpenVINO's inference precision (an ONNX graph runs as it is stored).

    Raises:
        ValueError: an unknown backend or the wrong files for it.
    """
    if backend == 'onnxruntime' and len(paths) >= 1 and paths[0].endswith('.onnx'):
        return ONNXRuntimeGraph(paths[0], num_threads)
    if backend == 'openvino' and len(paths) == 2 and paths[0].endswith('.xml') \
            and paths[1].endswith('.bin'):
        return OpenVINOGraph(paths[0], paths[1], num_threads, precision)
    raise ValueError(f'backend {backend!r} cannot open {list(paths)} (onnxruntime: an .onnx '
                     'file; openvino: an .xml and its .bin)')

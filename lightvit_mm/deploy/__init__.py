# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""Deploy a trained LightViT model whole (classifier, segmentor, detectors)
to ONNX Runtime or OpenVINO: :func:`export_model` writes a deployed-model
folder, :class:`DeployedModel` runs one and returns the packages' data
samples. Needs ``pip install '.[deploy]'`` (onnx, onnxruntime, openvino).
See docs/deployment.md."""
from .deployed_model import DeployedModel, check_images
from .exporter import compare, export_model
from .manifest import DeployedFolderError, read_manifest

__all__ = ['DeployedModel', 'DeployedFolderError', 'check_images', 'compare', 'export_model',
           'read_manifest']

import pytest
import torch
from conftest import load_tool
from mmpretrain.registry import MODELS

import lightvit_mm  # noqa: F401 (registers the classes)

official_to_mmpretrain = load_tool(
    'tools/model_converters/lightvit_official_to_mm.py').official_to_mmpretrain


def build_classifier(arch, neck_dim, num_classes):
    return MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='LightViT', arch=arch, out_type='raw', out_indices=-1),
        neck=dict(type='LightViTClsNeck', in_channels=arch['embed_dims'][-1],
                  out_channels=neck_dim),
        head=dict(type='LinearClsHead', num_classes=num_classes, in_channels=neck_dim)))


def test_classifier_matches_official_logits(official_vectors, mini_arch):
    model = build_classifier(mini_arch, official_vectors['cls_neck_dim'],
                             official_vectors['cls_num_classes'])
    model.load_state_dict(official_to_mmpretrain(official_vectors['cls_state_dict']),
                          strict=True)
    model.eval()
    with torch.no_grad():
        logits = model(official_vectors['cls_input'], mode='tensor')
    torch.testing.assert_close(logits, official_vectors['cls_logits'], atol=1e-5, rtol=0)


def test_neck_rejects_feature_maps():
    neck = MODELS.build(dict(type='LightViTClsNeck', in_channels=8, out_channels=4))
    with pytest.raises(ValueError, match=r"out_type='raw'"):
        neck((torch.rand(1, 8, 2, 2), ))

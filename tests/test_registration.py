import importlib

import pytest
import torch

import lightvit_mm
from lightvit_mm import LightViT, LightViTFPN


@pytest.mark.parametrize('package', ['mmdet', 'mmseg', 'mmpretrain'])
def test_backbone_builds_from_each_registry(package):
    registry = importlib.import_module(f'{package}.registry').MODELS
    model = registry.build(dict(type='LightViT', arch='tiny'))
    assert type(model) is LightViT
    assert registry.get('LightViT') is LightViT
    assert package in lightvit_mm.REGISTERED_IN


@pytest.mark.parametrize('package', ['mmdet', 'mmseg'])
def test_neck_builds_from_each_registry(package):
    registry = importlib.import_module(f'{package}.registry').MODELS
    neck = registry.build(dict(type='LightViTFPN', in_channels=[64, 128, 256],
                               out_channels=8, num_outs=5))
    assert type(neck) is LightViTFPN


def test_registration_is_idempotent_and_never_replaces():
    assert lightvit_mm.register_all_modules() == lightvit_mm.REGISTERED_IN
    from mmdet.registry import MODELS
    saved = MODELS.module_dict.pop('LightViTFPN')
    try:
        MODELS.register_module(name='LightViTFPN', module=torch.nn.Identity)
        with pytest.raises(KeyError, match='already holds another LightViTFPN'):
            lightvit_mm.register_all_modules()
    finally:
        MODELS.module_dict['LightViTFPN'] = saved

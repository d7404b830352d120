from .backbones import LightViT
from .necks import LightViTClsNeck, LightViTFPN

__all__ = ['LightViT', 'LightViTClsNeck', 'LightViTFPN']

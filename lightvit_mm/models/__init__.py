from .backbones import LightViT
from .necks import LightViTFPN

__all__ = ['LightViT', 'LightViTFPN']

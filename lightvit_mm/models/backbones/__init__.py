from .lightvit import LightViT

__all__ = ['LightViT']

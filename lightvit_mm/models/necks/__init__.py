from .lightvit_fpn import LightViTFPN

__all__ = ['LightViTFPN']

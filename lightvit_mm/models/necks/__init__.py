from .lightvit_cls_neck import LightViTClsNeck
from .lightvit_fpn import LightViTFPN

__all__ = ['LightViTClsNeck', 'LightViTFPN']

# UPerNet + LightViT-B, ADE20K 160k, 512x512: the LightViT-T recipe with the B widths.
_base_ = './lightvit-t-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py'

# Override with --cfg-options model.backbone.init_cfg.checkpoint=PATH
pretrained = 'https://github.com/hunto/LightViT/releases/download/v0.0.1/lightvit_base_82.1.ckpt'  # noqa

model = dict(
    backbone=dict(arch='base', init_cfg=dict(checkpoint=pretrained)),
    decode_head=dict(in_channels=[128, 256, 512]),
    auxiliary_head=dict(in_channels=256))

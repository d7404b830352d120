# LightViT-B, ImageNet-1k: the LightViT-T recipe (see its header for every
# official source and every remaining difference) with the B widths and
# drop-path 0.3 (official README.md, "Train from scratch": "set
# drop_path_rate to 0.3" for timm_lightvit_base).
# Precision: fp32, as the pinned official code computes. Its README adds
# --amp for B, but at image_classification_sota 36539b6 that flag only builds
# a torch.cuda.amp.GradScaler (tools/train.py:151-152) that scales the loss
# (:281) and never enters torch.cuda.amp.autocast, so every op runs in fp32.
# lightvit-base_8xb128-amp_in1k.py is the fp16 run the README meant.
_base_ = './lightvit-tiny_8xb128_in1k.py'

model = dict(
    backbone=dict(arch='base', drop_path_rate=0.3),
    neck=dict(in_channels=512))

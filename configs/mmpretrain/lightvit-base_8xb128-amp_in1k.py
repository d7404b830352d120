# LightViT-B, ImageNet-1k, mixed precision: what the authors' README intends
# with --amp ("we added --amp option to use mixed-precision training" for
# timm_lightvit_base; official README.md, "Train from scratch"): fp16 autocast
# with dynamic loss scaling (mmengine's AmpOptimWrapper; it needs a GPU, NPU,
# MLU or MUSA). The code the paper pins only scales the loss and computes in
# fp32 (see lightvit-base_8xb128_in1k.py), so this is not the recipe that made
# the paper's 82.1%; it is faster and lighter on memory. Otherwise the same.
_base_ = './lightvit-base_8xb128_in1k.py'

optim_wrapper = dict(type='AmpOptimWrapper', loss_scale='dynamic')

# UPerNet + LightViT-T on the digits in mixed precision: fp16 autocast with
# dynamic loss scaling (mmengine's AmpOptimWrapper; it needs a GPU, NPU, MLU or
# MUSA). bf16: --cfg-options optim_wrapper.dtype=bfloat16
_base_ = './lightvit-t_upernet_digits.py'

optim_wrapper = dict(type='AmpOptimWrapper', loss_scale='dynamic', dtype='float16')

# The digits demo in mixed precision: fp16 autocast with dynamic loss scaling
# (AmpOptimWrapper, GPU). bf16: --cfg-options optim_wrapper.dtype=bfloat16
_base_ = './mask-rcnn_lightvit-t_lightvit-fpn_digits.py'

optim_wrapper = dict(type='AmpOptimWrapper', loss_scale='dynamic', dtype='float16')

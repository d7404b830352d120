# Mask R-CNN + LightViT-T, COCO 1x, mixed precision: fp16 autocast with dynamic
# loss scaling (mmengine's AmpOptimWrapper; it needs a GPU, NPU, MLU or MUSA).
# Same as `tools/train.py CONFIG --amp` on the fp32 config. For bf16 (no loss
# scaling needed): --cfg-options optim_wrapper.dtype=bfloat16
_base_ = './mask-rcnn_lightvit-t_lightvit-fpn_1x_coco.py'

optim_wrapper = dict(type='AmpOptimWrapper', loss_scale='dynamic')

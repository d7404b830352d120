# The digits detector for inference with the backbone in deploy mode (as
# mmpretrain's RepVGG *_deploy configs): the stem's BatchNorms folded into
# their convolutions and every block's relative position bias computed once
# (LightViT.switch_to_deploy). It takes a checkpoint of the digits detector
# converted by tools/model_converters/reparameterize_model.py; it does not
# train (a deploy-mode backbone refuses train()).
_base_ = './mask-rcnn_lightvit-t_lightvit-fpn_digits.py'

model = dict(backbone=dict(deploy=True))

# The parameters LightViT trains without weight decay, as an mmengine
# `optim_wrapper.paramwise_cfg`: every norm (LayerNorms and the stem's
# BatchNorms, through norm_decay_mult), the relative position-bias tables and the
# global tokens (paper Sec. 4; official detection and ImageNet recipes).
# The paper configs list this file in `_base_` beside their package's base and
# use it as `paramwise_cfg=_base_.lightvit_no_decay`. It holds no model: the
# config tests skip configs/_base_.
lightvit_no_decay = dict(
    norm_decay_mult=0.0,
    custom_keys=dict(
        relative_position_bias_table=dict(decay_mult=0.0),
        global_token=dict(decay_mult=0.0)))

# AdamW for transformer backbones on COCO 1x (mmdet's 12 epochs, steps at 8 and 11), batch 16
# (8 GPUs x 2); no weight decay on norms, biases and relative-position tables. A config uses it
# with `optim_wrapper = {{_base_.adamw_1x_optim_wrapper}}` (mmengine forbids the same key in two
# bases, and the detector base already has mmdet's SGD optim_wrapper).
adamw_1x_optim_wrapper = dict(
    _delete_=True, type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0,
                       custom_keys={'relative_position_bias_table': dict(decay_mult=0.0),
                                    'rel_pos': dict(decay_mult=0.0)}),
    clip_grad=None)

# DeiT's schedule: 300 epochs, AdamW (betas 0.9/0.999, wd 0.05, no decay on 1-D params and the
# model's no_weight_decay() names), lr 5e-4 * batch / 512 -- written for the reference batch 1024
# (lr 1e-3) and rescaled by mmengine to the real batch (auto_scale_lr) -- 5 warmup epochs from
# lr * 0.002 (DeiT's 1e-6 at 512), cosine to lr * 0.02 (DeiT's 1e-5 at 512), per iteration.
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05),
    constructor='TimmOptimWrapperConstructor',
    clip_grad=None)
auto_scale_lr = dict(enable=True, base_batch_size=1024)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.002, by_epoch=True, begin=0, end=5, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=295, eta_min_ratio=0.02, by_epoch=True, begin=5, end=300,
         convert_to_iter_based=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=300, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

# The official HAT / HAT-S from-scratch schedule on DF2K (options/train/train_HAT*_SRx2_from_scratch.yml):
# Adam lr 2e-4, betas (0.9, 0.99), no weight decay, 500k iterations, MultiStepLR halving at
# 250k/400k/450k/475k, no warm-up, L1 loss, EMA 0.999, total batch 32 (4 per GPU x 8 GPUs).
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='Adam', lr=2e-4, betas=(0.9, 0.99), weight_decay=0))
param_scheduler = [
    dict(type='MultiStepLR', by_epoch=False, milestones=[250000, 400000, 450000, 475000], gamma=0.5),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=500000, val_interval=5000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='SRMultiTestLoop')
# mmengine's ExponentialMovingAverage momentum is 1 - BasicSR's ema_decay (0.999); validation,
# testing and the saved 'state_dict' use the EMA weights (BasicSR's params_ema)
custom_hooks = [dict(type='EMAHook', ema_type='ExponentialMovingAverage', momentum=0.001, strict_load=False)]
# 32 images per iteration in total; with --auto-scale-lr style scaling off, keep GPUs x batch_size = 32
auto_scale_lr = dict(enable=False, base_batch_size=32)

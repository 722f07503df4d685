# The official fine-tuning schedule (options/train/train_HAT*_SRx4_finetune_from_SRx2.yml): same as
# hat_500k.py at half the length and half the learning rate (1e-4), starting from the x2 model
# (set `load_from` in the config: "same-task pre-training").
_base_ = ['./hat_500k.py']
optim_wrapper = dict(optimizer=dict(lr=1e-4))
param_scheduler = [
    dict(type='MultiStepLR', by_epoch=False, milestones=[125000, 200000, 225000, 240000], gamma=0.5),
]
train_cfg = dict(max_iters=250000)

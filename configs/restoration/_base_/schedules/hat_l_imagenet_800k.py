# The official HAT-L ImageNet pre-training (options/train/train_HAT-L_SRx*_ImageNet_from_scratch.yml):
# Adam 2e-4, 800k iterations, MultiStepLR halving at 300k/500k/650k/700k/750k, batch 32, EMA 0.999.
_base_ = ['./hat_500k.py']
param_scheduler = [
    dict(type='MultiStepLR', by_epoch=False, milestones=[300000, 500000, 650000, 700000, 750000], gamma=0.5),
]
train_cfg = dict(max_iters=800000, val_interval=10000)

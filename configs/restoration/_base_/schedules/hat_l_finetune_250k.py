# The official HAT-L fine-tuning on DF2K after ImageNet pre-training
# (options/train/train_HAT-L_SRx*_finetune_from_ImageNet_pretrain.yml): lr 1e-5, 250k iterations,
# MultiStepLR halving at 125k/200k/225k/240k.
_base_ = ['./hat_500k.py']
optim_wrapper = dict(optimizer=dict(lr=1e-5))
param_scheduler = [
    dict(type='MultiStepLR', by_epoch=False, milestones=[125000, 200000, 225000, 240000], gamma=0.5),
]
train_cfg = dict(max_iters=250000)

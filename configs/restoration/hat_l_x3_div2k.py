# HAT-L x3, stage 2: fine-tuning on DIV2K/DF2K after ImageNet pre-training
# (options/train/train_HAT-L_SRx3_finetune_from_ImageNet_pretrain.yml): lr 1e-5, 250k iterations,
# starting from the EMA weights of hat_l_x3_imagenet.py.
_base_ = [
    './_base_/default_runtime.py',
    './_base_/datasets/div2k_x3.py',
    './_base_/schedules/hat_l_finetune_250k.py',
]
load_from = 'work_dirs/hat_l_x3_imagenet/iter_800000.pth'
model = dict(type='SRModel', arch='hat_l_x3', tile=dict(size=None, overlap=32))
default_hooks = dict(checkpoint=dict(interval=5000))

# HAT-L x3, stage 1: pre-training on ImageNet (options/train/train_HAT-L_SRx3_ImageNet_from_scratch.yml).
# HR images: an ImageNet-style tree under data/imagenet/train (searched recursively); each LR image
# is made on the fly by MATLAB-bicubic downsampling of the whole (mod-cropped) HR image, as the
# official ImageNetPairedDataset does; photos smaller than the HR patch are first resized up to it.
# Stage 2 is hat_l_x3_div2k.py.
_base_ = [
    './_base_/default_runtime.py',
    './_base_/datasets/div2k_x3.py',
    './_base_/schedules/hat_l_imagenet_800k.py',
]
# ImageNet's HR photos instead of DIV2K's pairs; div2k.py's training pipeline after the loading
train_dataloader = dict(dataset=dict(
    _delete_=True, type='SRFolderDataset', data_root='data/imagenet', gt_folder='train', recursive=True,
    scale=_base_.scale,
    pipeline=[dict(type='LoadSRPair', min_gt_size=_base_.lr_patch * _base_.scale), *_base_.train_pipeline[1:]]))
model = dict(type='SRModel', arch='hat_l_x3', tile=dict(size=None, overlap=32))
default_hooks = dict(checkpoint=dict(interval=10000))

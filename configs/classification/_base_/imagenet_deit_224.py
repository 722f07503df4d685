# ImageNet-1k at 224 in the ImageNet folder layout (data/imagenet/{train,val}/<wnid>/*.JPEG), with
# DeiT's training augmentation through timm's create_transform: RandomResizedCrop, flip,
# RandAugment rand-m9-mstd0.5-inc1, bicubic, random erasing 0.25 (pixel mode); evaluation resizes
# to 256 (crop_pct 0.875) and center-crops 224. Mixup/CutMix are in the model (they act on batches).
# Batch 128 per GPU (DeiT: 8 GPUs x 128 = 1024).
data_root = 'data/imagenet'
mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
train_pipeline = [
    dict(type='LoadPILImage'),
    dict(type='TimmTransform', input_size=224, is_training=True, auto_augment='rand-m9-mstd0.5-inc1',
         interpolation='bicubic', re_prob=0.25, re_mode='pixel', re_count=1, color_jitter=0.4, mean=mean, std=std),
    dict(type='PackClsInputs'),
]
test_pipeline = [
    dict(type='LoadPILImage'),
    dict(type='TimmTransform', input_size=224, is_training=False, interpolation='bicubic', crop_pct=0.875,
         mean=mean, std=std),
    dict(type='PackClsInputs'),
]
train_dataloader = dict(
    batch_size=128, num_workers=10, persistent_workers=True, drop_last=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type='ImageFolderDataset', data_root=data_root, data_prefix='train', pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=128, num_workers=10, persistent_workers=True, drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='ImageFolderDataset', data_root=data_root, data_prefix='val', pipeline=test_pipeline,
                 test_mode=True))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_evaluator = val_evaluator

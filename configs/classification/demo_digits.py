# The demo's classifier: scikit-learn's digits (32x32, 10 classes; `python tools/demo.py --data-only`
# makes data/demo/digits) with a timm ResNet-10-T from scratch, AdamW + warmup-cosine, label
# smoothing, light augmentation (no flips: digits are not mirror-symmetric). A few minutes on 2 CPU cores.
_base_ = ['./_base_/default_runtime.py']
data_root = 'data/demo/digits'
mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
model = dict(type='TimmClassifier', arch='resnet10t', num_classes=10, label_smoothing=0.1)
train_pipeline = [
    dict(type='LoadPILImage'),
    dict(type='TimmTransform', input_size=32, is_training=True, scale=(0.75, 1.0), ratio=(0.85, 1.15), hflip=0.0,
         color_jitter=None, interpolation='bilinear', mean=mean, std=std),
    dict(type='PackClsInputs'),
]
test_pipeline = [
    dict(type='LoadPILImage'),
    dict(type='TimmTransform', input_size=32, is_training=False, crop_pct=1.0, interpolation='bilinear',
         mean=mean, std=std),
    dict(type='PackClsInputs'),
]
train_dataloader = dict(
    batch_size=32, num_workers=0, drop_last=True, sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type='ImageFolderDataset', data_root=data_root, data_prefix='train', pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=64, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='ImageFolderDataset', data_root=data_root, data_prefix='val', pipeline=test_pipeline,
                 test_mode=True))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_evaluator = val_evaluator
max_epochs = 6
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.05),
                     constructor='TimmOptimWrapperConstructor')
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=1, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - 1, eta_min_ratio=0.01, by_epoch=True, begin=1,
         end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=2)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=2, max_keep_ckpts=1, save_best=None))

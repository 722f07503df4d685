# The demo's segmentor: Semantic FPN (mmseg, unchanged) with timm's ResNet-10-T at half width (the demo
# detector's backbone) from scratch through VZooBackbone, on the procedural shapes in ADE20K layout
# (data/demo/shapes/ade, 128x128; made by `python tools/demo.py --data-only`). Labels: 0 = background (a real class,
# in mIoU), 1 circle,
# 2 square, 3 triangle; hence reduce_zero_label=False (ADE20K itself uses True: its 0 is "other").
# From scratch it reaches about 0.45 mIoU in 800 iterations; `make demo` runs
# demo_shapes_fpn_resnet10t_from_det.py, which starts from the demo detector's backbone (0.77 in 400).
_base_ = ['mmseg::_base_/default_runtime.py']
custom_imports = dict(imports=['vzoo.mm'], allow_failed_imports=False)
data_root = 'data/demo/shapes/ade'
classes = ('background', 'circle', 'square', 'triangle')
palette = [[0, 0, 0], [220, 20, 60], [0, 128, 255], [255, 200, 0]]
crop_size = (128, 128)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(type='SegDataPreProcessor', mean=[127.5, 127.5, 127.5], std=[64.0, 64.0, 64.0],
                           bgr_to_rgb=True, pad_val=0, seg_pad_val=255, size=crop_size),
    # the detector's backbone (ResNet-10-T at half width: 32/64/128/256 channels, strides 4-32)
    backbone=dict(type='VZooBackbone', model='resnet10t', channels=(32, 64, 128, 256), out_indices=(1, 2, 3, 4),
                  frozen_stages=-1, norm_eval=False, init_cfg=None),
    neck=dict(type='FPN', in_channels=[32, 64, 128, 256], out_channels=64, num_outs=4),
    decode_head=dict(
        type='FPNHead', in_channels=[64, 64, 64, 64], in_index=[0, 1, 2, 3], feature_strides=[4, 8, 16, 32],
        channels=64, dropout_ratio=0.0, num_classes=len(classes), norm_cfg=dict(type='BN', requires_grad=True),
        align_corners=False, loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
dataset_type = 'BaseSegDataset'
metainfo = dict(classes=classes, palette=palette)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=False),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=False),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False, sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type=dataset_type, data_root=data_root, metainfo=metainfo, img_suffix='.jpg', seg_map_suffix='.png',
                 reduce_zero_label=False,
                 data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False, sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, metainfo=metainfo, img_suffix='.jpg', seg_map_suffix='.png',
                 reduce_zero_label=False,
                 data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'),
                 test_mode=True, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
max_iters = 400
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.01),
                     paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0), clip_grad=None)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='PolyLR', power=0.9, eta_min=1e-5, by_epoch=False, begin=50, end=max_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=10, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=200, max_keep_ckpts=1),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook', draw=False, interval=1))
env_cfg = dict(cudnn_benchmark=False)
randomness = dict(seed=0)

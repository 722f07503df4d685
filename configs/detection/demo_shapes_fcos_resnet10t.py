# The demo's detector: FCOS (mmdet, unchanged) with a narrow timm ResNet-10-T from scratch through
# VZooBackbone, on the procedural shapes (COCO format, 128x128, 3 classes, 2000 training scenes; made
# by `python tools/demo.py --data-only` under data/demo/shapes/coco). Narrow FPN/head (64 channels,
# two convs, GN), levels P3-P5 (strides 8/16/32: the shapes are 20-65 px), FCOS's improvements
# (center sampling, normalised boxes, centerness on the regression branch, GIoU).
# Measured on the shapes val set (same 750 iterations): RegNetX-200MF 0.26-0.49 box mAP (400 / 2000
# scenes), this ResNet-10-T 0.71 with 2000 scenes: plain dense 3x3 convs learn faster from scratch
# and cost less on a CPU than RegNetX's grouped ones. About 3 minutes on 2 CPU cores.
_base_ = ['mmdet::_base_/default_runtime.py']
custom_imports = dict(imports=['vzoo.mm'], allow_failed_imports=False)
data_root = 'data/demo/shapes/coco/'
classes = ('circle', 'square', 'triangle')
model = dict(
    type='FCOS',
    data_preprocessor=dict(type='DetDataPreprocessor', mean=[127.5, 127.5, 127.5], std=[64.0, 64.0, 64.0],
                           bgr_to_rgb=True, pad_size_divisor=32),
    # ResNet-10-T (deep tiered stem, one BasicBlock per stage) at half width: stages of 32/64/128/256
    # channels; out_indices 2-4 are strides 8/16/32
    backbone=dict(type='VZooBackbone', model='resnet10t', channels=(32, 64, 128, 256), out_indices=(2, 3, 4),
                  frozen_stages=-1, norm_eval=False),
    neck=dict(type='FPN', in_channels=[64, 128, 256], out_channels=64, start_level=0, add_extra_convs=False,
              num_outs=3),
    bbox_head=dict(
        type='FCOSHead', num_classes=len(classes), in_channels=64, stacked_convs=2, feat_channels=64,
        strides=[8, 16, 32], regress_ranges=((-1, 48), (48, 96), (96, 1e8)),
        norm_cfg=dict(type='GN', num_groups=16, requires_grad=True),
        norm_on_bbox=True, centerness_on_reg=True, center_sampling=True, center_sample_radius=1.5, conv_bias=True,
        dcn_on_last_conv=False,
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
        loss_bbox=dict(type='GIoULoss', loss_weight=1.0),
        loss_centerness=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0)),
    test_cfg=dict(nms_pre=200, min_bbox_size=0, score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5),
                  max_per_img=20))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5, direction=['horizontal', 'vertical']),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),  # sets scale_factor: boxes map back to the image
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=True), batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(type='CocoDataset', data_root=data_root, metainfo=dict(classes=classes),
                 ann_file='annotations/instances_train.json', data_prefix=dict(img='train/'),
                 filter_cfg=dict(filter_empty_gt=True, min_size=4), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False, drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='CocoDataset', data_root=data_root, metainfo=dict(classes=classes),
                 ann_file='annotations/instances_val.json', data_prefix=dict(img='val/'), test_mode=True,
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='CocoMetric', ann_file=data_root + 'annotations/instances_val.json', metric='bbox',
                     format_only=False)
test_evaluator = val_evaluator
# 3 epochs of 250 iterations (2000 scenes, batch 8); box mAP on val after 1/2/3 epochs of a longer
# schedule: 0.25/0.53/0.71. Validated once, at the end (tools/test.py evaluates the same set again).
max_epochs = 3
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.05),
                     paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0), clip_grad=dict(max_norm=10.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', T_max=max_epochs, eta_min_ratio=0.01, by_epoch=True, begin=0, end=max_epochs,
         convert_to_iter_based=True),
]
default_hooks = dict(logger=dict(type='LoggerHook', interval=10),
                     checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=1))
env_cfg = dict(cudnn_benchmark=False)
randomness = dict(seed=0)
auto_scale_lr = dict(enable=False, base_batch_size=8)

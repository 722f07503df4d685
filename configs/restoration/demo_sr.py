# The embedded SR demo (make demo): a small HAT-S (shrunk through arch_kwargs) learns x2 on a few
# scikit-image sample photographs in a few CPU minutes. Data: data/demo/sr/{train,val}/HR/*.png
# (HR only; each LR image is made on the fly by MATLAB-bicubic downsampling). The trivial baseline
# is MATLAB-bicubic upsampling of the LR image (reported by the metric as PSNR_bicubic/SSIM_bicubic).
_base_ = ['./_base_/default_runtime.py']

scale = 2
data_root = 'data/demo/sr'

train_pipeline = [
    dict(type='LoadSRPair', cache=True),
    dict(type='PairedAlbu', transforms=[
        dict(type='PairedRandomCrop', lr_size=32),
        dict(type='HorizontalFlip', p=0.5),
        dict(type='RandomRotate90', p=1.0),
    ]),
    dict(type='PackSRInputs'),
]
test_pipeline = [dict(type='LoadSRPair'), dict(type='PackSRInputs')]

train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type='SRFolderDataset', data_root=data_root, gt_folder='train/HR', scale=scale,
                 pipeline=train_pipeline),
)
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='SRFolderDataset', data_root=data_root, gt_folder='val/HR', scale=scale,
                 dataset_name='demo_val', pipeline=test_pipeline, test_mode=True),
)
test_dataloader = val_dataloader
val_evaluator = dict(type='SRMetric', measures=['PSNR', 'SSIM'], crop_border=scale, with_bicubic=True)
test_evaluator = val_evaluator

# HAT-S's blocks (HAB with channel attention + window attention, OCAB, RHAG) at a CPU size; the
# network predicts the residual over MATLAB-bicubic upsampling, which it learns much faster from
# scratch than the full image (the published HAT adds no such residual)
model = dict(
    type='SRModel',
    arch='hat_s_x2',
    arch_kwargs=dict(embed_dim=48, depths=(2, 2), num_heads=(3, 3), window_size=8, compress_ratio=3,
                     squeeze_factor=16, num_feat=32, drop_path_rate=0.0),
    residual='bicubic',
    tile=dict(size=None, overlap=16),
)

optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='Adam', lr=1e-3, betas=(0.9, 0.99), weight_decay=0))
max_iters = 600
param_scheduler = [dict(type='CosineAnnealingLR', by_epoch=False, T_max=max_iters, eta_min=1e-5)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=20),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters, max_keep_ckpts=1, save_best=None),
)
log_processor = dict(window_size=20)

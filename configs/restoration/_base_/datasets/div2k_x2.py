# DIV2K x2 training pairs and the five SR benchmarks, as folders (docs/training.md):
#   data/DIV2K/DIV2K_train_HR/0001.png ...            data/DIV2K/DIV2K_train_LR_bicubic/X2/0001x2.png ...
#   data/benchmark/<Set5|Set14|B100|Urban100|Manga109>/HR/<name>.png
#   data/benchmark/<set>/LR_bicubic/X2/<name>x2.png
# LR images are MATLAB-bicubic downsamplings of the mod-cropped HR images; without the LR folders set
# `lr_folder=None` and they are made on the fly with the same MATLAB-style bicubic (docs/training.md).
# DF2K (DIV2K + Flickr2K, what the official HAT models train on): add a second SRFolderDataset on
# data/Flickr2K/Flickr2K_HR and Flickr2K_LR_bicubic/X2 through dict(type='ConcatDataset', datasets=[...]).
scale = 2
lr_patch = 64  # LR patch; HR patch 128 (the official gt_size)

train_pipeline = [
    dict(type='LoadSRPair'),
    dict(type='PairedAlbu', transforms=[
        dict(type='PairedRandomCrop', lr_size=lr_patch),
        dict(type='HorizontalFlip', p=0.5),
        dict(type='RandomRotate90', p=1.0),  # with the flip: all 8 orientations, as BasicSR's hflip + rot
    ]),
    dict(type='PackSRInputs'),
]
test_pipeline = [dict(type='LoadSRPair'), dict(type='PackSRInputs')]

train_dataloader = dict(
    batch_size=4,  # per GPU: x 8 GPUs = 32, the official total
    num_workers=6,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type='SRFolderDataset', data_root='data/DIV2K', gt_folder='DIV2K_train_HR',
                 lr_folder='DIV2K_train_LR_bicubic/X2', lr_filename_tmpl='{}x2', scale=scale,
                 pipeline=train_pipeline),
)


def _bench(name):  # noqa: E302  (config helper; mmengine drops functions from the parsed config)
    return dict(
        batch_size=1, num_workers=2, persistent_workers=False, drop_last=False,
        sampler=dict(type='DefaultSampler', shuffle=False),
        dataset=dict(type='SRFolderDataset', data_root=f'data/benchmark/{name}', gt_folder='HR',
                     lr_folder='LR_bicubic/X2', lr_filename_tmpl='{}x2', scale=scale,
                     dataset_name=name, pipeline=test_pipeline, test_mode=True))


benchmarks = ['Set5', 'Set14', 'B100', 'Urban100', 'Manga109']
val_dataloader = _bench('Set5')
val_evaluator = dict(type='SRMetric', measures=['PSNR', 'SSIM'], crop_border=scale, test_y_channel=True,
                     prefix='Set5')
# tools/test.py: every benchmark in one run (keys Set5/PSNR, Urban100/SSIM, ...)
test_dataloader = [_bench(b) for b in benchmarks]
test_evaluator = [dict(type='SRMetric', measures=['PSNR', 'SSIM'], crop_border=scale, test_y_channel=True, prefix=b)
                  for b in benchmarks]

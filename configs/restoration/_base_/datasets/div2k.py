# DIV2K training pairs and the five SR benchmarks, as folders (docs/training.md), at a scale s that
# div2k_x2.py / div2k_x3.py / div2k_x4.py set (with the LR folders and file names, and the border crop):
#   data/DIV2K/DIV2K_train_HR/0001.png ...            data/DIV2K/DIV2K_train_LR_bicubic/X<s>/0001x<s>.png ...
#   data/benchmark/<Set5|Set14|B100|Urban100|Manga109>/HR/<name>.png
#   data/benchmark/<set>/LR_bicubic/X<s>/<name>x<s>.png
# LR images are MATLAB-bicubic downsamplings of the mod-cropped HR images; without the LR folders set
# `lr_folder=None` and they are made on the fly with the same MATLAB-style bicubic (docs/training.md).
# DF2K (DIV2K + Flickr2K, what the official HAT models train on): add a second SRFolderDataset on
# data/Flickr2K/Flickr2K_HR and Flickr2K_LR_bicubic/X<s> through dict(type='ConcatDataset', datasets=[...]).
lr_patch = 64  # LR patch; the HR patch is lr_patch * s: 128, 192, 256 at x2, x3, x4 (the official gt_size)

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
    dataset=dict(type='SRFolderDataset', data_root='data/DIV2K', gt_folder='DIV2K_train_HR', pipeline=train_pipeline),
)


def _bench(name):  # noqa: E302  (config helper; mmengine drops functions from the parsed config)
    return dict(
        batch_size=1, num_workers=2, persistent_workers=False, drop_last=False,
        sampler=dict(type='DefaultSampler', shuffle=False),
        dataset=dict(type='SRFolderDataset', data_root=f'data/benchmark/{name}', gt_folder='HR',
                     dataset_name=name, pipeline=test_pipeline, test_mode=True))


benchmarks = ['Set5', 'Set14', 'B100', 'Urban100', 'Manga109']
# tools/test.py: every benchmark in one run (keys Set5/PSNR, Urban100/SSIM, ...); validation: Set5
test_dataloader = [_bench(b) for b in benchmarks]
test_evaluator = [dict(type='SRMetric', measures=['PSNR', 'SSIM'], test_y_channel=True, prefix=b) for b in benchmarks]
val_dataloader = _bench('Set5')
val_evaluator = dict(type='SRMetric', measures=['PSNR', 'SSIM'], test_y_channel=True, prefix='Set5')

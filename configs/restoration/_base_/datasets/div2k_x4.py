# DIV2K x4 and the five SR benchmarks (data layout, pipelines and loaders: div2k.py): the X4 LR folders
# and file names, and PSNR/SSIM with a 4-pixel border crop. (A base config cannot read its child's
# variables, so each scale sets its own; names starting with `__` do not become config keys.)
_base_ = ['./div2k.py']
scale = 4
__lr = dict(lr_folder='LR_bicubic/X4', lr_filename_tmpl='{}x4', scale=scale)  # as in every benchmark folder
train_dataloader = dict(dataset=dict(__lr, lr_folder='DIV2K_train_LR_bicubic/X4'))
test_dataloader = [dict(loader, dataset=dict(loader.dataset, **__lr)) for loader in _base_.test_dataloader]
test_evaluator = [dict(metric, crop_border=scale) for metric in _base_.test_evaluator]
val_dataloader, val_evaluator = test_dataloader[0], test_evaluator[0]

# VAN-B1 Mask R-CNN 1x on COCO (VAN, CVMJ 2023, Table 8): the paper follows PVT's 1x recipe
# (AdamW lr 1e-4, wd 1e-4, batch 16, 12 epochs); stochastic depth 0.1 is assumed (no released
# detection config). VAN is convolutional: any input size that the pipeline pads to 32 works.
_base_ = ['./_base_/mask-rcnn_vzoo_fpn_1x_coco.py']
model = dict(
    backbone=dict(model='van_b1', drop_path_rate=0.1,
                  pretrained=True),
    neck=dict(in_channels=[64, 128, 320, 512]))
optim_wrapper = dict(
    _delete_=True, type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=1e-4),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0),
    clip_grad=None)
auto_scale_lr = dict(enable=False, base_batch_size=16)

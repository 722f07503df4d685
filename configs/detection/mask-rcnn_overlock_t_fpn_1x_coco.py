# OverLoCK-T Mask R-CNN 1x on COCO (OverLoCK, CVPR 2025; official
# detection/configs/maskrcnn_overlock/mask_rcnn_overlock_t_in1k_fpn_1x_coco.py, UniFormer's recipe):
# stochastic depth 0.2, AdamW lr 2e-4, wd 0.05 without decay on norms, mmdet's 1x schedule, batch 16
# (8 GPUs x 2). The official backbone adds LayerNorms (and a context projection) on its outputs,
# trained from scratch; here the neck reads the four OverLoCK levels directly.
_base_ = ['./_base_/mask-rcnn_vzoo_fpn_1x_coco.py']
model = dict(
    backbone=dict(model='overlock_t', drop_path_rate=0.2,
                  pretrained=True),
    neck=dict(in_channels=[64, 128, 384, 640]))
optim_wrapper = dict(
    _delete_=True, type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.0)}),
    clip_grad=None)
auto_scale_lr = dict(enable=False, base_batch_size=16)

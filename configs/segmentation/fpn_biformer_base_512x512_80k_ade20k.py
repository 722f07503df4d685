# BiFormer-B Semantic FPN on ADE20K (BiFormer, CVPR 2023, Table 4; official
# semantic_segmentation/configs/ade20k/sfpn.biformer_base.py, UniFormer's recipe): n_win 8 for the 512x512
# training crops, auto_pad, topks (1, 4, 16, -2), stochastic depth 0.3, a LayerNorm on every backbone
# output, SyncBN in the backbone; AdamW lr 2e-4, wd 1e-4, batch 32 (8 GPUs x 4), 80k iterations,
# 1000 linear warm-up iterations from 0.1x, then cosine decay to 1e-8x.
_base_ = ['./_base_/fpn_vzoo_512x512_ade20k.py']
model = dict(
    backbone=dict(model='biformer_base', n_win=8, auto_pad=True, feature_norms=True, drop_path_rate=0.3,
                  pretrained=True),
    neck=dict(in_channels=[96, 192, 384, 768]))
optim_wrapper = dict(_delete_=True, type='OptimWrapper', optimizer=dict(type='AdamW', lr=2e-4, weight_decay=1e-4),
                     clip_grad=None)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=1000),
    dict(type='CosineAnnealingLR', T_max=80000, eta_min_ratio=1e-8, by_epoch=False, begin=0, end=80000),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=80000, val_interval=4000)
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=4000))
sync_bn = 'torch'  # the release converts the backbone's BatchNorm to SyncBatchNorm (used when distributed)

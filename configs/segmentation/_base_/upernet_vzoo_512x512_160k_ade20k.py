# UPerNet 160k on ADE20K (512x512 crops, batch 16 = 8 GPUs x 2) with a VZooBackbone:
# mmseg's own config, only the backbone swapped, with the AdamW recipe of Swin/DaViT/GC ViT
# (lr 6e-5, wd 0.01, 1500 linear warm-up iterations, then poly decay power 1.0).
_base_ = ['mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py']
custom_imports = dict(imports=['vzoo.mm'], allow_failed_imports=False)
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    pretrained=None,
    backbone=dict(_delete_=True, type='VZooBackbone', model=None, out_indices=(0, 1, 2, 3), frozen_stages=-1,
                  norm_eval=False),
    decode_head=dict(in_channels=None, num_classes=150),
    auxiliary_head=dict(in_channels=None, in_index=2, num_classes=150))
optim_wrapper = dict(
    _delete_=True, type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.0),
                                    'relative_position_bias_table': dict(decay_mult=0.0)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False),
]
train_dataloader = dict(batch_size=2)

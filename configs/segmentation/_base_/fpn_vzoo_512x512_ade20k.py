# Semantic FPN on ADE20K (512x512 crops) with a VZooBackbone: mmseg's own config, only the backbone
# swapped. The schedule is the PVT/PoolFormer one (40k iterations, batch 32 = 8 GPUs x 4, AdamW
# lr 2e-4, wd 1e-4, poly decay power 0.9); families override what their papers changed.
_base_ = ['mmseg::sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py']
custom_imports = dict(imports=['vzoo.mm'], allow_failed_imports=False)
model = dict(
    pretrained=None,
    backbone=dict(_delete_=True, type='VZooBackbone', model=None, out_indices=(0, 1, 2, 3), frozen_stages=-1,
                  norm_eval=False),
    neck=dict(in_channels=None, num_outs=4),
    decode_head=dict(num_classes=150))
optim_wrapper = dict(
    _delete_=True, type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, weight_decay=1e-4),
    clip_grad=None)
param_scheduler = [dict(type='PolyLR', power=0.9, eta_min=0.0, begin=0, end=40000, by_epoch=False)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=40000, val_interval=4000)
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=4000))
train_dataloader = dict(batch_size=4)

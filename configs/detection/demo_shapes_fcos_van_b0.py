# The demo's detector as `make demo` trains it: demo_shapes_fcos_resnet10t.py (FCOS on the procedural
# shapes, 128x128, narrow FPN/head) with vzoo's VAN-B0 (large-kernel attention) instead of the ResNet-10-T,
# from scratch through VZooBackbone, shrunk through timm kwargs to one block per stage (two in stage 3)
# and 32/64/128/256 channels (strides 4-32; out_indices 1-3 are strides 8/16/32, as before).
# 5 epochs (1250 iterations): box mAP on val after epochs 1-5 of this schedule 0.14/0.24/0.39/0.50/0.54;
# 3 epochs give 0.28. Measured against FaViT-B0 at the same size: docs/training.md, "The demo".
_base_ = ['./demo_shapes_fcos_resnet10t.py']
model = dict(backbone=dict(_delete_=True, type='VZooBackbone', model='van_b0', depths=(1, 1, 2, 1),
                           embed_dims=(32, 64, 128, 256), out_indices=(1, 2, 3), frozen_stages=-1, norm_eval=False))
max_epochs = 5
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', T_max=max_epochs, eta_min_ratio=0.01, by_epoch=True, begin=0, end=max_epochs,
         convert_to_iter_based=True),
]

# The demo's segmentor with vzoo's VAN-B0 (the demo detector's backbone: one block per stage, two in
# stage 3, 32/64/128/256 channels) instead of the ResNet-10-T of demo_shapes_fpn_resnet10t.py, from scratch
# through VZooBackbone; `make demo` runs demo_shapes_fpn_van_b0_from_det.py, which starts from the detector's.
_base_ = ['./demo_shapes_fpn_resnet10t.py']
model = dict(backbone=dict(_delete_=True, type='VZooBackbone', model='van_b0', depths=(1, 1, 2, 1),
                           embed_dims=(32, 64, 128, 256), out_indices=(0, 1, 2, 3), frozen_stages=-1,
                           norm_eval=False, init_cfg=None))
# 800 iterations: from the VAN-B0 detector's backbone 0.47 mIoU after 400, 0.70 after 800
max_iters = 800
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='PolyLR', power=0.9, eta_min=1e-5, by_epoch=False, begin=50, end=max_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)

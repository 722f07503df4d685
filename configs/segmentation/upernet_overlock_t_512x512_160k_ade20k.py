# OverLoCK-T UPerNet 160k on ADE20K (OverLoCK, CVPR 2025; official
# segmentation/configs/overlock/upernet_overlock_tiny_ade20k_8xb2.py, the Swin recipe): stochastic depth
# 0.2; AdamW lr 6e-5, wd 0.01 without decay on norms, 1500 linear warm-up iterations, poly decay power
# 1.0, batch 16 (8 GPUs x 2) -- the base's schedule.
_base_ = ['./_base_/upernet_vzoo_512x512_160k_ade20k.py']
model = dict(
    backbone=dict(model='overlock_t', drop_path_rate=0.2,
                  pretrained=True),
    decode_head=dict(in_channels=[64, 128, 384, 640]),
    auxiliary_head=dict(in_channels=384))

# DaViT-T UPerNet 160k on ADE20K (DaViT, ECCV 2022, Table 6): AdamW lr 6e-5, wd 0.01, batch 16,
# stochastic depth 0.2 (assumed, as Swin-T).
_base_ = ['./_base_/upernet_vzoo_512x512_160k_ade20k.py']
model = dict(
    backbone=dict(model='davit_tiny', drop_path_rate=0.2,
                  pretrained=True),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))

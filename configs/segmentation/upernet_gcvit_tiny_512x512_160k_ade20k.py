# GC ViT-T UPerNet 160k on ADE20K (GC ViT, ICML 2023, Table 4): AdamW lr 6e-5, wd 0.01, batch 16,
# stochastic depth 0.2 (assumed).
_base_ = ['./_base_/upernet_vzoo_512x512_160k_ade20k.py']
model = dict(
    backbone=dict(model='gcvit_tiny', drop_path_rate=0.2,
                  pretrained=True),
    decode_head=dict(in_channels=[64, 128, 256, 512]),
    auxiliary_head=dict(in_channels=256))

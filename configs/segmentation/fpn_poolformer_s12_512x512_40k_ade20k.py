# PoolFormer-S12 Semantic FPN 40k on ADE20K (MetaFormer, CVPR 2022, Table 4): AdamW lr 2e-4,
# wd 1e-4, batch 32, poly decay 0.9 (the base's schedule).
_base_ = ['./_base_/fpn_vzoo_512x512_ade20k.py']
model = dict(
    backbone=dict(model='poolformer_s12',
                  pretrained=True),
    neck=dict(in_channels=[64, 128, 320, 512]))

# SHViT-S4 Semantic FPN on ADE20K. The SHViT paper has no ADE20K result: this uses the PVT/PoolFormer
# Semantic FPN recipe of the base (40k, AdamW 2e-4). Three stages at strides 16/32/64.
_base_ = ['./_base_/fpn_vzoo_512x512_ade20k.py']
model = dict(
    backbone=dict(model='shvit_s4', out_indices=(0, 1, 2),
                  pretrained=True),
    neck=dict(in_channels=[224, 336, 448], num_outs=3),
    decode_head=dict(in_index=[0, 1, 2], in_channels=[256, 256, 256], feature_strides=[16, 32, 64]))

# MobileNet-V2 + ULSAM (g=4, ULSAM in place of one 96- and one 160-channel block: the ULSAM paper's
# 2.96 M / 261.88 M-FLOP ImageNet configuration) as a Semantic FPN backbone, 40k on ADE20K. The ULSAM
# paper (WACV 2020) evaluates classification only and releases no weights: this uses the base's
# PVT/PoolFormer recipe (AdamW lr 2e-4, wd 1e-4, batch 32, poly decay) on the stride 4-32 stages
# (24, 32, 96, 320 channels). Train the ImageNet model first (tools/train.py
# configs/classification/ulsam_mobilenetv2_g4_8xb128-deit-300e_in1k.py): init_cfg points at its last
# checkpoint.
_base_ = ['./_base_/fpn_vzoo_512x512_ade20k.py']
model = dict(
    backbone=dict(model='ulsam_mobilenetv2_g4', out_indices=(1, 2, 3, 4),
                  init_cfg=dict(type='Pretrained', prefix='model.',  # the classifier inside vzoo's wrapper
                                checkpoint='work_dirs/ulsam_mobilenetv2_g4_8xb128-deit-300e_in1k/epoch_300.pth')),
    neck=dict(in_channels=[24, 32, 96, 320]))

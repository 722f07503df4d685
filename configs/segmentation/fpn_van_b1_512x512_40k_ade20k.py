# VAN-B1 Semantic FPN 40k on ADE20K (VAN, CVMJ 2023, Table 9; official VAN-Segmentation
# configs/sem_fpn/fpn_van_b1_ade20k_40k.py): AdamW lr 2e-4, wd 1e-4, batch 32 (8 GPUs x 4),
# poly decay 0.9 (the base's schedule), stochastic depth 0.2.
_base_ = ['./_base_/fpn_vzoo_512x512_ade20k.py']
model = dict(
    backbone=dict(model='van_b1', drop_path_rate=0.2,
                  pretrained=True),
    neck=dict(in_channels=[64, 128, 320, 512]))

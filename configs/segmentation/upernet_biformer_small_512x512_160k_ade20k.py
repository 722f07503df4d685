# BiFormer-S UPerNet 160k on ADE20K (BiFormer, CVPR 2023, Table 4; official
# semantic_segmentation/configs/ade20k/upernet.biformer_small.py, Swin/CSWin recipe): n_win 8 for the
# 512x512 crops, auto_pad, topks (1, 4, 16, -2), stochastic depth 0.3, a LayerNorm on every backbone
# output, SyncBN in the backbone; AdamW lr 6e-5, wd 0.01 without decay on norms, 1500 linear warm-up
# iterations, poly decay power 1.0, batch 16 (8 GPUs x 2) -- the base's schedule.
_base_ = ['./_base_/upernet_vzoo_512x512_160k_ade20k.py']
model = dict(
    backbone=dict(model='biformer_small', n_win=8, auto_pad=True, feature_norms=True, drop_path_rate=0.3,
                  pretrained=True),
    decode_head=dict(in_channels=[64, 128, 256, 512]),
    auxiliary_head=dict(in_channels=256))
sync_bn = 'torch'  # the release converts the backbone's BatchNorm to SyncBatchNorm (used when distributed)

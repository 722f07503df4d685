# PoolFormer-S12 RetinaNet 1x on COCO (MetaFormer, CVPR 2022, Table 3): AdamW lr 1e-4, wd 1e-4, batch 16.
_base_ = ['./_base_/retinanet_vzoo_fpn_1x_coco.py']
model = dict(
    backbone=dict(model='poolformer_s12', out_indices=(0, 1, 2, 3),
                  pretrained=True),
    neck=dict(in_channels=[64, 128, 320, 512], start_level=1))
optim_wrapper = dict(_delete_=True, type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-4, weight_decay=1e-4))

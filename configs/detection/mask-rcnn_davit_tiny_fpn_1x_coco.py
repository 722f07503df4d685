# DaViT-T Mask R-CNN 1x on COCO (DaViT, ECCV 2022, Table 5): AdamW lr 1e-4, wd 0.05, batch 16,
# 12 epochs; stochastic depth 0.2 as in its Swin-based detection recipe (assumed: the paper does not list it).
_base_ = ['./_base_/mask-rcnn_vzoo_fpn_1x_coco.py', './_base_/adamw_1x.py']
model = dict(
    backbone=dict(model='davit_tiny', drop_path_rate=0.2,
                  pretrained=True),
    neck=dict(in_channels=[96, 192, 384, 768]))
optim_wrapper = {{_base_.adamw_1x_optim_wrapper}}

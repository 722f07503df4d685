# SHViT-S4 RetinaNet 1x on COCO (SHViT, CVPR 2024, Table 6): AdamW, batch 16, 12 epochs
# (lr 1e-4 / wd 0.05 assumed). SHViT has three stages at strides 16/32/64, so the FPN starts at
# stride 16 and the anchors at 16..256.
_base_ = ['./_base_/retinanet_vzoo_fpn_1x_coco.py', './_base_/adamw_1x.py']
model = dict(
    backbone=dict(model='shvit_s4', out_indices=(0, 1, 2),
                  pretrained=True),
    neck=dict(in_channels=[224, 336, 448], start_level=0),
    bbox_head=dict(anchor_generator=dict(strides=[16, 32, 64, 128, 256])))
optim_wrapper = {{_base_.adamw_1x_optim_wrapper}}

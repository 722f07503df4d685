# MOAT-0 Mask R-CNN 1x on COCO. The MOAT paper (ICLR 2023) evaluates COCO with Cascade Mask R-CNN in
# its own TensorFlow pipeline and releases no mmdetection config, so this is mmdet's Mask R-CNN 1x with
# the Swin-style AdamW recipe (lr 1e-4, wd 0.05, batch 16, 12 epochs; assumed). As the paper does for
# high-resolution inputs, global attention becomes non-shifted window attention: 14x14 windows at
# stride 16 and 7x7 at stride 32 (deeplab2's default MOAT window_size), maps padded to the window.
# Shortcut average pool 3x3 (deeplab2's get_model default for downstream tasks; classification uses 2x2),
# stochastic depth 0.2 (deeplab2's MOAT-0 survival_prob 0.8), SyncBN as deeplab2 (when distributed).
_base_ = ['./_base_/mask-rcnn_vzoo_fpn_1x_coco.py', './_base_/adamw_1x.py']
model = dict(
    backbone=dict(model='moat_0', window_size=(14, 7), pool_size=3, drop_path_rate=0.2,
                  pretrained=True),
    neck=dict(in_channels=[96, 192, 384, 768]))
optim_wrapper = {{_base_.adamw_1x_optim_wrapper}}
sync_bn = 'torch'

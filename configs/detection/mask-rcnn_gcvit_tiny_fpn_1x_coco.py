# GC ViT-T Mask R-CNN on COCO (GC ViT, ICML 2023): AdamW lr 1e-4, wd 0.05, batch 16, stochastic depth 0.2.
# The paper trains 3x; this is the 1x schedule. Any input size works: vzoo pads GC ViT's windows.
_base_ = ['./_base_/mask-rcnn_vzoo_fpn_1x_coco.py', './_base_/adamw_1x.py']
model = dict(
    backbone=dict(model='gcvit_tiny', drop_path_rate=0.2,
                  pretrained=True),
    neck=dict(in_channels=[64, 128, 256, 512]))
optim_wrapper = {{_base_.adamw_1x_optim_wrapper}}

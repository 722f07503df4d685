# BiFormer-S Mask R-CNN 1x on COCO (BiFormer, CVPR 2023, Table 3; official
# object_detection/configs/coco/maskrcnn.1x.biformer_small.py): n_win 16, auto_pad, topks (1, 4, 16, -2),
# stochastic depth 0.2, a LayerNorm on every backbone output, BatchNorm in eval mode (norm_eval=True);
# AdamW lr 1e-4, betas (0.9, 0.999), wd 0.05 without decay on norms (UniFormer's recipe), steps at 8 and 11,
# batch 16. The release trains in fp16: add --amp to tools/train.py on a GPU.
_base_ = ['./_base_/mask-rcnn_vzoo_fpn_1x_coco.py']
model = dict(
    backbone=dict(model='biformer_small', norm_eval=True,
                  n_win=16, auto_pad=True, feature_norms=True, drop_path_rate=0.2,
                  pretrained=True),
    neck=dict(in_channels=[64, 128, 256, 512]))
optim_wrapper = dict(
    _delete_=True, type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.0)}),
    clip_grad=None)

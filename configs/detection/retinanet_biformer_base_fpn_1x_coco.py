# BiFormer-B RetinaNet 1x on COCO (BiFormer, CVPR 2023, Table 3; official
# object_detection/configs/coco/retinanet.1x.biformer_base.py): n_win 16 for the ~800x1333 training size,
# auto_pad, topks (1, 4, 16, -2), stochastic depth 0.3, a LayerNorm on every backbone output, BatchNorm
# kept in eval mode (the release's norm_eval=True); AdamW lr 1e-4, wd 1e-4, batch 16, 12 epochs.
# The release trains in fp16 (loss scale 512): add --amp to tools/train.py on a GPU.
_base_ = ['./_base_/retinanet_vzoo_fpn_1x_coco.py']
model = dict(
    backbone=dict(model='biformer_base', out_indices=(1, 2, 3), norm_eval=True,
                  n_win=16, auto_pad=True, feature_norms=True, drop_path_rate=0.3,
                  pretrained=True),
    neck=dict(in_channels=[192, 384, 768], start_level=0))
optim_wrapper = dict(_delete_=True, type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-4, weight_decay=1e-4),
                     clip_grad=None)
find_unused_parameters = True  # stage 1's LayerNorm is built but not used by the neck (as in the release)

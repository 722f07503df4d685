# OverLoCK-S Mask R-CNN 3x on COCO (official mask_rcnn_overlock_s_in1k_fpn_3x_coco.py): the OverLoCK-T
# 3x recipe with stochastic depth 0.4.
_base_ = ['./mask-rcnn_overlock_t_fpn_3x_coco.py']
model = dict(
    backbone=dict(model='overlock_s', drop_path_rate=0.4,
                  pretrained=True),
    neck=dict(in_channels=[64, 128, 448, 640]))

# OverLoCK-B Mask R-CNN 1x on COCO (official mask_rcnn_overlock_b_in1k_fpn_1x_coco.py): the OverLoCK-T
# recipe with stochastic depth 0.6.
_base_ = ['./mask-rcnn_overlock_t_fpn_1x_coco.py']
model = dict(
    backbone=dict(model='overlock_b', drop_path_rate=0.6,
                  pretrained=True),
    neck=dict(in_channels=[80, 160, 528, 720]))

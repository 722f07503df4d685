# Mask R-CNN 1x on COCO with a VZooBackbone: mmdet's own config, only the backbone swapped.
_base_ = ['mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py']
custom_imports = dict(imports=['vzoo.mm'], allow_failed_imports=False)
model = dict(
    backbone=dict(_delete_=True, type='VZooBackbone', model=None, out_indices=(0, 1, 2, 3), frozen_stages=-1,
                  norm_eval=False),
    neck=dict(in_channels=None))

# RetinaNet 1x on COCO with a VZooBackbone: mmdet's own config, only the backbone swapped.
# A family's config sets backbone.model, the neck's in_channels and its paper's optimizer.
_base_ = ['mmdet::retinanet/retinanet_r50_fpn_1x_coco.py']
custom_imports = dict(imports=['vzoo.mm'], allow_failed_imports=False)
model = dict(
    backbone=dict(_delete_=True, type='VZooBackbone', model=None, out_indices=(1, 2, 3), frozen_stages=-1,
                  norm_eval=False),
    neck=dict(in_channels=None, start_level=0, add_extra_convs='on_input', num_outs=5))

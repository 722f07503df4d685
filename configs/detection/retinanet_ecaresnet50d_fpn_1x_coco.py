# timm's ECA-ResNet-50-D RetinaNet 1x on COCO with mmdet's ResNet recipe (SGD lr 0.01, momentum 0.9,
# wd 1e-4, batch 16), as the ECA-Net paper (CVPR 2020, Table 6) trained its detectors. The paper's
# own ECA-ResNet-50 (torchvision layout) is vzoo's eca_resnet50; this is timm's ResNet-D variant.
_base_ = ['./_base_/retinanet_vzoo_fpn_1x_coco.py']
model = dict(
    backbone=dict(model='ecaresnet50d', out_indices=(1, 2, 3, 4), frozen_stages=1, norm_eval=True,
                  pretrained=True),
    neck=dict(in_channels=[256, 512, 1024, 2048], start_level=1))

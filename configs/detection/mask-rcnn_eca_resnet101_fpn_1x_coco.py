# ECA-ResNet-101 Mask R-CNN 1x on COCO: the ECA-Net paper's detection experiment (CVPR 2020),
# trained with MMDetection: SGD lr 0.01, momentum 0.9, weight decay 1e-4, batch 8 (4 GPUs x 2 images),
# 12 epochs with the LR divided by 10 after epochs 8 and 11, shorter side 800. Backbone: vzoo's
# eca_resnet101 (the paper's torchvision-layout net, not timm's ecaresnet101d), first stage and all
# BatchNorm statistics frozen as in MMDetection's ResNet recipe. ECA kernel sizes per stage:
# 3, 3, 5, 7, the same as the paper's detectors (k3357) and the released ImageNet checkpoint.
_base_ = ['./_base_/mask-rcnn_vzoo_fpn_1x_coco.py']
model = dict(
    backbone=dict(model='eca_resnet101', out_indices=(1, 2, 3, 4), frozen_stages=1, norm_eval=True,
                  pretrained=True),
    neck=dict(in_channels=[256, 512, 1024, 2048]))
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=1e-4))
train_dataloader = dict(batch_size=2)  # x 4 GPUs = the paper's batch of 8
auto_scale_lr = dict(enable=False, base_batch_size=8)

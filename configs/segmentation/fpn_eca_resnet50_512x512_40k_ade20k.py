# ECA-ResNet-50 Semantic FPN 40k on ADE20K. The ECA-Net paper has no segmentation result: this is the
# PVT/PoolFormer Semantic FPN recipe of the base (40k iterations, AdamW lr 2e-4, wd 1e-4, batch 32,
# poly decay) with the paper's ECA-ResNet-50 (vzoo's eca_resnet50: torchvision layout, ECA kernel
# sizes 3, 5, 5, 7 as the released ImageNet checkpoint), BatchNorm statistics frozen as for ResNets.
_base_ = ['./_base_/fpn_vzoo_512x512_ade20k.py']
model = dict(
    backbone=dict(model='eca_resnet50', out_indices=(1, 2, 3, 4), norm_eval=True,
                  pretrained=True),
    neck=dict(in_channels=[256, 512, 1024, 2048]))

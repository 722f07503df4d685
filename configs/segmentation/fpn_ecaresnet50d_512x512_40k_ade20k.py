# timm's ECA-ResNet-50-D Semantic FPN on ADE20K. The ECA-Net paper has no segmentation result: this
# uses the PVT/PoolFormer Semantic FPN recipe of the base (40k, AdamW 2e-4), BatchNorm frozen.
_base_ = ['./_base_/fpn_vzoo_512x512_ade20k.py']
model = dict(
    backbone=dict(model='ecaresnet50d', out_indices=(1, 2, 3, 4), norm_eval=True,
                  pretrained=True),
    neck=dict(in_channels=[256, 512, 1024, 2048]))

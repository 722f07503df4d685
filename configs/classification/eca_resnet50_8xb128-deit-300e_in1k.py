# ECA-Net ResNet-50 (vzoo.models.eca, the official ECA-Net layout; a CNN -- the shared DeiT recipe rather than the
# paper's SGD schedule).
# ImageNet-1k at 224 with the DeiT recipe (configs/classification/_base_/): 300 epochs, AdamW
# lr 5e-4 x batch/512, wd 0.05, 5 warmup epochs + cosine, label smoothing 0.1, Mixup 0.8 / CutMix 1.0,
# RandAugment rand-m9-mstd0.5-inc1, random erasing 0.25; 8 GPUs x 128.
_base_ = ['./_base_/deit_in1k_224.py']
model = dict(arch='eca_resnet50', arch_kwargs=dict(drop_path_rate=0.0))

# SHViT-S4 (timm's implementation; paper: 79.4 top-1).
# ImageNet-1k at 224 with the DeiT recipe (configs/classification/_base_/): 300 epochs, AdamW
# lr 5e-4 x batch/512, wd 0.05, 5 warmup epochs + cosine, label smoothing 0.1, Mixup 0.8 / CutMix 1.0,
# RandAugment rand-m9-mstd0.5-inc1, random erasing 0.25; 8 GPUs x 128. timm's SHViT has no stochastic depth (nor does
# the paper's
# recipe), so the base's drop_path_rate is removed.
_base_ = ['./_base_/deit_in1k_224.py']
model = dict(arch='shvit_s4', arch_kwargs=dict(_delete_=True))

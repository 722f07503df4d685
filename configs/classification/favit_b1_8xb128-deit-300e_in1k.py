# FaViT-B1 (vzoo.models.favit; release: 79.4 top-1, 13 M params).
# ImageNet-1k at 224 with the DeiT recipe (configs/classification/_base_/): 300 epochs, AdamW
# lr 5e-4 x batch/512, wd 0.05, 5 warmup epochs + cosine, label smoothing 0.1, Mixup 0.8 / CutMix 1.0,
# RandAugment rand-m9-mstd0.5-inc1, random erasing 0.25; 8 GPUs x 128. Drop path 0.1 (the DeiT default).
_base_ = ['./_base_/deit_in1k_224.py']
model = dict(arch='favit_b1', arch_kwargs=dict(drop_path_rate=0.1))

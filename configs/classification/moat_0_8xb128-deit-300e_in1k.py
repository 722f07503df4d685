# MOAT-0 (vzoo.models.moat; release: 83.3 top-1 at 224, trained in deeplab2's TensorFlow pipeline).
# ImageNet-1k at 224 with the DeiT recipe (configs/classification/_base_/): 300 epochs, AdamW
# lr 5e-4 x batch/512, wd 0.05, 5 warmup epochs + cosine, label smoothing 0.1, Mixup 0.8 / CutMix 1.0,
# RandAugment rand-m9-mstd0.5-inc1, random erasing 0.25; 8 GPUs x 128. Stochastic depth 0.2 is the
# release's MOAT-0 rate (survival_prob 0.8); global attention, shortcut pool 2x2 (classification).
_base_ = ['./_base_/deit_in1k_224.py']
model = dict(arch='moat_0', arch_kwargs=dict(drop_path_rate=0.2))

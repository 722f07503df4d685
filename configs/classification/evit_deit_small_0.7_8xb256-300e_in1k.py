# EViT/DeiT-S, keep rate 0.7 with inattentive-token fusion at blocks 3, 6, 9 (vzoo.models.evit; release
# table: 79.5 top-1), trained as the release's run_code.sh does: from scratch, 300 epochs, 8 GPUs x 256
# (batch 2048), the DeiT recipe (configs/classification/_base_/: AdamW lr 5e-4 x batch/512, wd 0.05,
# 5 warmup epochs + cosine, label smoothing 0.1, Mixup 0.8 / CutMix 1.0, RandAugment rand-m9-mstd0.5-inc1,
# random erasing 0.25, drop path 0.1), model EMA 0.99996 (main.py's default), and the keep-rate warm-up:
# keep rate 1 for 10 epochs, then a cosine down to 0.7 over 100 epochs (--shrink_start_epoch 10
# --shrink_epochs 100). Validation during training runs at the current keep rate, as the release's does.
# Not mirrored: DeiT's repeated augmentation (RASampler; vzoo has no such sampler).
# Other rows of the release's table: model.arch_kwargs.keep_rate=0.5 / fuse_token=False.
_base_ = ['./_base_/deit_in1k_224.py']
model = dict(arch='evit_deit_small_patch16_224',
             arch_kwargs=dict(drop_path_rate=0.1, keep_rate=0.7, fuse_token=True, drop_loc=(3, 6, 9)))
train_dataloader = dict(batch_size=256)
custom_hooks = [
    dict(type='KeepRateWarmupHook', shrink_start_epoch=10, shrink_epochs=100),
    dict(type='EMAHook', momentum=4e-5, priority='ABOVE_NORMAL'),
]

# OverLoCK-T (vzoo.models.overlock; paper: 84.2 top-1).
# ImageNet-1k at 224 with the DeiT recipe (configs/classification/_base_/) and the release's overrides
# (scripts/train_t_model.sh): 8 GPUs x 256, AdamW lr 1e-3 at batch 1024 (auto-scaled), 300 epochs with
# 5 warmup epochs, drop path 0.15, model EMA 0.9999, gradient clipping at norm 5.
_base_ = ['./_base_/deit_in1k_224.py']
model = dict(arch='overlock_t', arch_kwargs=dict(drop_path_rate=0.15))
train_dataloader = dict(batch_size=256)
optim_wrapper = dict(clip_grad=dict(_delete_=True, max_norm=5.0))
custom_hooks = [dict(type='EMAHook', momentum=1e-4, priority='ABOVE_NORMAL')]

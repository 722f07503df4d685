# LV-ViT-S (vzoo.models.lvvit; release: 83.3 top-1 with token labeling).
# ImageNet-1k at 224 with the DeiT recipe (configs/classification/_base_/) and the TokenLabeling release's
# overrides: 8 GPUs x 128, AdamW lr 1.6e-3 at batch 1024 (auto-scaled), drop path 0.1, model EMA.
# Token labeling itself (MixToken and the dense per-patch label maps of an annotator model) is not
# reproduced: this trains LV-ViT with the class label only, which the release reports as about 1 point lower.
_base_ = ['./_base_/deit_in1k_224.py']
model = dict(arch='lvvit_s', arch_kwargs=dict(drop_path_rate=0.1))
optim_wrapper = dict(optimizer=dict(lr=1.6e-3))
custom_hooks = [dict(type='EMAHook', momentum=4e-5, priority='ABOVE_NORMAL')]

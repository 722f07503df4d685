# The DeiT recipe's model side: a timm classifier (a family config sets `arch` and its drop-path
# rate), Mixup 0.8 / CutMix 1.0 (switch 0.5, per batch) with label smoothing 0.1 in the soft targets.
# EMA of the weights (DeiT's optional model EMA, decay 0.99996) is off; to switch it on add
#   custom_hooks = [dict(type='EMAHook', momentum=4e-5, priority='ABOVE_NORMAL')]
model = dict(
    type='TimmClassifier', arch=None, num_classes=1000, arch_kwargs=dict(drop_path_rate=0.1),
    mixup=dict(mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5, mode='batch', label_smoothing=0.1))

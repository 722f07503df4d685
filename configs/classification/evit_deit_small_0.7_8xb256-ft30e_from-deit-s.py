# EViT/DeiT-S at keep rate 0.7 with fusion, fine-tuned from DeiT-S weights as the release's finetune.sh
# does: 30 epochs, 8 GPUs x 256 (batch 2048), keep rate 0.7 from the first iteration (--shrink_start_epoch 0
# --shrink_epochs 0), AdamW lr 2e-5 x batch/512 without warmup, cosine to 2e-6, weight decay 1e-6, the DeiT
# augmentation and Mixup/CutMix. The release fine-tunes with the network in eval mode (no drop path):
# drop_path_rate=0 is the same for a ViT (it has no BatchNorm, and its dropout rates are 0).
#   python tools/train.py THIS --cfg-options model.pretrained=deit_small_patch16_224-cd65a155.pth
_base_ = ['./_base_/deit_in1k_224.py']
max_epochs = 30
model = dict(arch='evit_deit_small_patch16_224', pretrained=None,
             arch_kwargs=dict(drop_path_rate=0.0, keep_rate=0.7, fuse_token=True, drop_loc=(3, 6, 9)))
train_dataloader = dict(batch_size=256)
optim_wrapper = dict(optimizer=dict(lr=4e-5, weight_decay=1e-6))  # 2e-5 x 1024/512 at auto_scale_lr's base 1024
param_scheduler = [dict(type='CosineAnnealingLR', T_max=max_epochs, eta_min=2e-6, by_epoch=True,
                        begin=0, end=max_epochs, convert_to_iter_based=True)]
train_cfg = dict(max_epochs=max_epochs)
custom_hooks = [
    dict(type='KeepRateWarmupHook', shrink_start_epoch=0, shrink_epochs=0),
    dict(type='EMAHook', momentum=4e-5, priority='ABOVE_NORMAL'),
]

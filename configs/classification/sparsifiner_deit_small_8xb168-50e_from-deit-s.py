# Sparsifiner/DeiT-S, the release's default experiment (experiments/sparsifiner_default_config.yaml): keep
# rate 0.25, REDUCE_N/C_FACTOR 6/2, basis threshold 2e-2, top-8 basis coefficients, no token pruning;
# student and teacher start from DeiT-S weights (the predictor freshly initialised); 8 GPUs x 168, 50 epochs:
#   epochs 0-4   'attn_recon':  only the predictors train, attention reconstruction loss (weight 0.01),
#                               lr 3e-4 -> 2e-4 (3 warm-up epochs from 0, then cosine)
#   epochs 5-49  'cls_distill': only the backbone trains, on the sparse attention: cross-entropy + 0.5 KL to
#                               the teacher's logits + 0.5 MSE to its last tokens, lr 8e-5 -> 2e-6 (3 warm-up)
# each phase with a fresh AdamW state (weight decay 0.05); the phase hook sets the lr, not param schedulers.
#   python tools/train.py THIS --cfg-options model.pretrained=deit_small_patch16_224-cd65a155.pth \
#       model.teacher.pretrained=deit_small_patch16_224-cd65a155.pth
_base_ = ['./_base_/deit_in1k_224.py']
max_epochs = 50
model = dict(type='SparsifinerClassifier', arch='sparsifiner_deit_small_patch16_224', pretrained=None,
             arch_kwargs=dict(drop_path_rate=0.1, attn_keep_rate=0.25, reduce_n_factor=6, reduce_c_factor=2),
             teacher=dict(arch='deit_small_patch16_224', pretrained=None),
             attn_recon_loss=dict(type='AttnReconLoss', weight=0.01),
             cls_distill_loss=dict(type='ClsDistillLoss', weight=0.5),
             token_distill_loss=dict(type='TokenDistillLoss', weight=0.5))
train_dataloader = dict(batch_size=168)
optim_wrapper = dict(optimizer=dict(lr=8e-5, weight_decay=0.05))
auto_scale_lr = dict(enable=False)  # the release's phase learning rates are absolute
param_scheduler = None
train_cfg = dict(max_epochs=max_epochs)
custom_hooks = [dict(type='SparsifinerPhaseHook', phases=[
    dict(name='attn_recon', epochs=5, warmup_epochs=3, base_lr=3e-4, final_lr=2e-4),
    dict(name='cls_distill', epochs=45, warmup_epochs=3, base_lr=8e-5, final_lr=2e-6)])]

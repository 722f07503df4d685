# Sparsifiner/DeiT-S on the DeiT recipe's 300 epochs (the release only fine-tunes from DeiT-S: see
# sparsifiner_deit_small_8xb168-50e_from-deit-s.py, its default experiment). The student starts from
# scratch and learns from the dense DeiT-S teacher in the release's two phases: 5 epochs of attention
# reconstruction (predictors only), then 295 of class-token distillation (backbone only) on the sparse attention.
#   python tools/train.py THIS --cfg-options model.teacher.pretrained=deit_small_patch16_224-cd65a155.pth
_base_ = ['./sparsifiner_deit_small_8xb168-50e_from-deit-s.py']
max_epochs = 300
train_dataloader = dict(batch_size=128)
train_cfg = dict(max_epochs=max_epochs)
custom_hooks = [dict(type='SparsifinerPhaseHook', phases=[
    dict(name='attn_recon', epochs=5, warmup_epochs=3, base_lr=3e-4, final_lr=2e-4),
    dict(name='cls_distill', epochs=295, warmup_epochs=5, base_lr=5e-4, final_lr=1e-5)])]

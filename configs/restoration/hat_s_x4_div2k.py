# HAT-S x4, fine-tuned from the x2 model ("same-task pre-training", as the official
# options/train/train_HAT-S_SRx4_finetune_from_SRx2.yml): lr 1e-4, 250k iterations. Train
# hat_s_x2_div2k.py first; `load_from` takes its last checkpoint (the saved state_dict holds the EMA
# weights, BasicSR's params_ema). The x2 and x4 networks share every weight but the second
# upsampling stage, which is missing from the x2 checkpoint and starts from its initialisation.
_base_ = [
    './_base_/default_runtime.py',
    './_base_/datasets/div2k_x4.py',
    './_base_/schedules/hat_finetune_250k.py',
]
load_from = 'work_dirs/hat_s_x2_div2k/iter_500000.pth'

# the released hyper-parameters are the defaults of vzoo's `hat_s_x4` (vzoo/models/hat.py); tiled
# inference for large images: --cfg-options model.tile.size=256 (LR pixels; overlap below)
model = dict(type='SRModel', arch='hat_s_x4', tile=dict(size=None, overlap=32))
train_cfg = dict(val_interval=20000)
default_hooks = dict(checkpoint=dict(interval=20000))

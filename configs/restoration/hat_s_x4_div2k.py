# HAT-S x4, fine-tuned from the HAT-S x2 model: hat_x4_div2k.py's schedule ("same-task pre-training", as
# the official options/train/train_HAT-S_SRx4_finetune_from_SRx2.yml) with the smaller network. Train
# hat_s_x2_div2k.py first; `load_from` takes its last checkpoint.
_base_ = ['./hat_x4_div2k.py']
load_from = 'work_dirs/hat_s_x2_div2k/iter_500000.pth'

# the released hyper-parameters are the defaults of vzoo's `hat_s_x4` (vzoo/models/hat.py)
model = dict(arch='hat_s_x4')
train_cfg = dict(val_interval=20000)
default_hooks = dict(checkpoint=dict(interval=20000))

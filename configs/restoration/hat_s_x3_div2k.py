# HAT-S x3 from scratch: hat_x3_div2k.py's official schedule (options/train/train_HAT-S_SRx3_from_scratch.yml)
# with the smaller network, validated and saved every 20k iterations.
_base_ = ['./hat_x3_div2k.py']

# the released hyper-parameters are the defaults of vzoo's `hat_s_x3` (vzoo/models/hat.py)
model = dict(arch='hat_s_x3')
train_cfg = dict(val_interval=20000)
default_hooks = dict(checkpoint=dict(interval=20000))

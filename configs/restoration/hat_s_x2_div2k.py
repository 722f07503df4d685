# HAT-S x2 from scratch: hat_x2_div2k.py's official schedule (options/train/train_HAT-S_SRx2_from_scratch.yml)
# with the smaller network, validated and saved every 20k iterations.
_base_ = ['./hat_x2_div2k.py']

# the released hyper-parameters are the defaults of vzoo's `hat_s_x2` (vzoo/models/hat.py)
model = dict(arch='hat_s_x2')
train_cfg = dict(val_interval=20000)
default_hooks = dict(checkpoint=dict(interval=20000))

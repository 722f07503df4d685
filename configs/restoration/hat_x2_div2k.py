# HAT x2 from scratch with the official schedule (options/train/train_HAT_SRx2_from_scratch.yml).
_base_ = [
    './_base_/default_runtime.py',
    './_base_/datasets/div2k_x2.py',
    './_base_/schedules/hat_500k.py',
]

# the released hyper-parameters are the defaults of vzoo's `hat_x2` (vzoo/models/hat.py); tiled
# inference for large images: --cfg-options model.tile.size=256 (LR pixels; overlap below)
model = dict(type='SRModel', arch='hat_x2', tile=dict(size=None, overlap=32))
train_cfg = dict(val_interval=5000)
default_hooks = dict(checkpoint=dict(interval=5000))

# OverLoCK-S UPerNet 160k on ADE20K (official upernet_overlock_small_ade20k_8xb2.py): the OverLoCK-T
# recipe with stochastic depth 0.3.
_base_ = ['./upernet_overlock_t_512x512_160k_ade20k.py']
model = dict(
    backbone=dict(model='overlock_s', drop_path_rate=0.3,
                  pretrained=True),
    decode_head=dict(in_channels=[64, 128, 448, 640]),
    auxiliary_head=dict(in_channels=448))

# OverLoCK-B UPerNet 160k on ADE20K (official upernet_overlock_base_ade20k_8xb2.py): the OverLoCK-T
# recipe with stochastic depth 0.5.
_base_ = ['./upernet_overlock_t_512x512_160k_ade20k.py']
model = dict(
    backbone=dict(model='overlock_b', drop_path_rate=0.5,
                  pretrained=True),
    decode_head=dict(in_channels=[80, 160, 528, 720]),
    auxiliary_head=dict(in_channels=528))

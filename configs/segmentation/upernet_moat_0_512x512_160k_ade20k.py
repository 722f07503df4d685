# MOAT-0 UPerNet 160k on ADE20K. The MOAT paper (ICLR 2023) evaluates ADE20K with DeepLabv3+ in its own
# TensorFlow pipeline and releases no mmsegmentation config, so this is the base's Swin-style UPerNet
# recipe (AdamW lr 6e-5, wd 0.01, 1500 warm-up iterations, poly decay, batch 16; assumed). Global
# attention becomes non-shifted window attention: 16x16 windows at stride 16 and 8x8 at stride 32, which
# tile the 512x512 crops' 32x32 / 16x16 maps exactly (other sizes are padded to the window); the
# relative-position tables (sized for 14 / 7) are resized to the window bilinearly, as deeplab2 does at
# every resolution other than 224. Shortcut pool 3x3 (deeplab2's default for downstream tasks),
# stochastic depth 0.2 (deeplab2's MOAT-0 rate), SyncBN as deeplab2 (when distributed).
_base_ = ['./_base_/upernet_vzoo_512x512_160k_ade20k.py']
model = dict(
    backbone=dict(model='moat_0', window_size=(16, 8), pool_size=3, drop_path_rate=0.2,
                  pretrained=True),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
sync_bn = 'torch'

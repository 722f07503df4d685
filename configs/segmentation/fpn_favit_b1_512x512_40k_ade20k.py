# FaViT-B1 Semantic FPN on ADE20K (FaViT, TNNLS 2023; the release's
# sem_fpn/FaViT/fpn_favit_b1_ade20k_160k.py, since deleted but in the repository's history): it scales
# PVT's recipe by 4 ("gpu_multiples = 4"): AdamW lr 2.4e-4 (6e-5 x 4), wd 0.01, 8 images per GPU,
# 40k iterations (160k / 4) with poly decay power 0.9, evaluation every 4k; stochastic depth 0.1
# (the release's segmentation backbone).
_base_ = ['./_base_/fpn_vzoo_512x512_ade20k.py']
model = dict(
    backbone=dict(model='favit_b1', drop_path_rate=0.1,
                  # FaViT's weights are not published: the ImageNet model trained with configs/classification/
                  # favit_b1_8xb128-deit-300e_in1k.py (tools/train.py), the classifier inside vzoo's wrapper
                  init_cfg=dict(type='Pretrained', prefix='model.',
                                checkpoint='work_dirs/favit_b1_8xb128-deit-300e_in1k/epoch_300.pth')),
    neck=dict(in_channels=[64, 128, 256, 512]))
optim_wrapper = dict(
    _delete_=True, type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2.4e-4, weight_decay=0.01),
    clip_grad=None)
train_dataloader = dict(batch_size=8)

# FaViT-B1 Mask R-CNN 1x on COCO (FaViT, TNNLS 2023; the release's detection config
# mask_rcnn_favit_b1_fpn_1x_coco.py, since deleted from the repository but in its history):
# AdamW lr 2e-4, wd 0.05, 4 images per GPU (batch 32 on 8 GPUs), mmdet's 1x schedule
# (12 epochs, steps at 8 and 11, 500 linear warm-up iterations), stochastic depth 0.1 (the
# release's detection backbone). FaViT accepts any input size that the pipeline pads to 32.
_base_ = ['./_base_/mask-rcnn_vzoo_fpn_1x_coco.py']
model = dict(
    backbone=dict(model='favit_b1', drop_path_rate=0.1,
                  # FaViT's weights are not published: the ImageNet model trained with configs/classification/
                  # favit_b1_8xb128-deit-300e_in1k.py (tools/train.py), the classifier inside vzoo's wrapper
                  init_cfg=dict(type='Pretrained', prefix='model.',
                                checkpoint='work_dirs/favit_b1_8xb128-deit-300e_in1k/epoch_300.pth')),
    neck=dict(in_channels=[64, 128, 256, 512]))
optim_wrapper = dict(
    _delete_=True, type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=0.05),
    clip_grad=None)
train_dataloader = dict(batch_size=4)
auto_scale_lr = dict(enable=False, base_batch_size=32)

# The demo's segmentor as `make demo` trains it: demo_shapes_fpn_resnet10t.py with its backbone
# initialised from the demo detector's (transfer learning between the two tasks on the same scenes, as
# dense-prediction configs start from ImageNet weights; nothing is downloaded). tools/demo.py trains the
# detector first and writes its backbone weights (tensors only) to work_dirs/demo/detection/backbone.pth.
_base_ = ['./demo_shapes_fpn_resnet10t.py']
model = dict(backbone=dict(init_cfg=dict(_delete_=True, type='Pretrained',
                                         checkpoint='work_dirs/demo/detection/backbone.pth',
                                         prefix='backbone.body.')))

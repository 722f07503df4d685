# The demo's segmentor as `make demo` trains it: demo_shapes_fpn_van_b0.py with its backbone initialised
# from the demo detector's (demo_shapes_fcos_van_b0.py; tools/demo.py trains the detector first and
# writes its backbone tensors to work_dirs/demo/detection/backbone.pth). Nothing is downloaded.
_base_ = ['./demo_shapes_fpn_van_b0.py']
model = dict(backbone=dict(init_cfg=dict(_delete_=True, type='Pretrained',
                                         checkpoint='work_dirs/demo/detection/backbone.pth',
                                         prefix='backbone.body.')))

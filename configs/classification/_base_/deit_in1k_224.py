# Everything of the DeiT ImageNet-1k recipe at 224; a family config only names its model:
#   _base_ = ['./_base_/deit_in1k_224.py']
#   model = dict(arch='davit_tiny', arch_kwargs=dict(drop_path_rate=0.1))
_base_ = ['./default_runtime.py', './imagenet_deit_224.py', './schedule_deit_300e.py', './deit_model.py']

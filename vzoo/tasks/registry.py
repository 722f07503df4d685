"""The ``vzoo`` scope of mmengine's registries, shared by every task (classification, restoration).

Each registry here is a child of mmengine's root registry of the same name, with scope ``'vzoo'``.
A config with ``default_scope = 'vzoo'`` therefore finds vzoo's classes first and falls back to
mmengine's own (optimizers, loops, hooks, samplers ...). ``locations`` makes mmengine import
``vzoo.tasks`` (which imports every task subpackage) the first time one of these registries is
searched, so a config needs no ``custom_imports``.
"""
from mmengine.registry import DATA_SAMPLERS as MMENGINE_DATA_SAMPLERS
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import EVALUATOR as MMENGINE_EVALUATOR
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS
from mmengine.registry import VISBACKENDS as MMENGINE_VISBACKENDS
from mmengine.registry import VISUALIZERS as MMENGINE_VISUALIZERS
from mmengine.registry import Registry

SCOPE = "vzoo"
_LOCATIONS = ["vzoo.tasks"]

MODELS = Registry("model", parent=MMENGINE_MODELS, scope=SCOPE, locations=_LOCATIONS)
DATASETS = Registry("dataset", parent=MMENGINE_DATASETS, scope=SCOPE, locations=_LOCATIONS)
DATA_SAMPLERS = Registry("data sampler", parent=MMENGINE_DATA_SAMPLERS, scope=SCOPE, locations=_LOCATIONS)
TRANSFORMS = Registry("transform", parent=MMENGINE_TRANSFORMS, scope=SCOPE, locations=_LOCATIONS)
METRICS = Registry("metric", parent=MMENGINE_METRICS, scope=SCOPE, locations=_LOCATIONS)
EVALUATOR = Registry("evaluator", parent=MMENGINE_EVALUATOR, scope=SCOPE, locations=_LOCATIONS)
HOOKS = Registry("hook", parent=MMENGINE_HOOKS, scope=SCOPE, locations=_LOCATIONS)
OPTIM_WRAPPER_CONSTRUCTORS = Registry("optimizer wrapper constructor", parent=MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS,
                                      scope=SCOPE, locations=_LOCATIONS)
VISUALIZERS = Registry("visualizer", parent=MMENGINE_VISUALIZERS, scope=SCOPE, locations=_LOCATIONS)
VISBACKENDS = Registry("vis_backend", parent=MMENGINE_VISBACKENDS, scope=SCOPE, locations=_LOCATIONS)

__all__ = ["SCOPE", "MODELS", "DATASETS", "DATA_SAMPLERS", "TRANSFORMS", "METRICS", "EVALUATOR", "HOOKS",
           "OPTIM_WRAPPER_CONSTRUCTORS", "VISUALIZERS", "VISBACKENDS"]

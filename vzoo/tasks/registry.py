"""The ``vzoo`` scope of mmengine's registries, shared by every task (classification, restoration).

Each registry here is a child of mmengine's root registry of the same name, with scope ``'vzoo'``.
A config with ``default_scope = 'vzoo'`` therefore finds vzoo's classes first and falls back to
mmengine's own (optimizers, loops, hooks, samplers ...). ``locations`` makes mmengine import
``vzoo.tasks`` (which imports every task subpackage) the first time one of these registries is
searched, so a config needs no ``custom_imports``.
"""
import mmengine.registry as _mm
from mmengine.registry import Registry

SCOPE = "vzoo"
_LOCATIONS = ["vzoo.tasks"]

# every root registry of mmengine gets a 'vzoo' child, so that building anything under
# default_scope='vzoo' (optimizers, schedulers, log processors ...) finds mmengine's classes quietly
_ROOTS = dict(
    RUNNERS="runner", RUNNER_CONSTRUCTORS="runner constructor", LOOPS="loop", HOOKS="hook", STRATEGIES="strategy",
    DATASETS="dataset", DATA_SAMPLERS="data sampler", TRANSFORMS="transform", MODELS="model",
    WEIGHT_INITIALIZERS="weight initializer", MODEL_WRAPPERS="model_wrapper", OPTIMIZERS="optimizer",
    OPTIM_WRAPPERS="optim_wrapper", OPTIM_WRAPPER_CONSTRUCTORS="optimizer wrapper constructor",
    PARAM_SCHEDULERS="parameter scheduler", METRICS="metric", EVALUATOR="evaluator", TASK_UTILS="task util",
    VISUALIZERS="visualizer", VISBACKENDS="vis_backend", LOG_PROCESSORS="log_processor", INFERENCERS="inferencer",
    FUNCTIONS="function",
)
for _name, _label in _ROOTS.items():
    globals()[_name] = Registry(_label, parent=getattr(_mm, _name), scope=SCOPE, locations=_LOCATIONS)

__all__ = ["SCOPE"] + list(_ROOTS)


def build_in_vzoo_scope(registry: Registry, cfg):
    """Build ``cfg`` with ``registry`` under the ``'vzoo'`` scope unless the cfg names a ``_scope_``.

    A plain ``registry.build(cfg)`` follows mmengine's current default scope: after an mmdet or
    mmseg runner has been created in the same process, that scope is ``'mmdet'``/``'mmseg'`` and
    vzoo's classes would not be found. Objects that vzoo builds itself (pipelines, preprocessors)
    therefore pin their own scope; mmengine's and mmcv's classes are still found through the parent.
    """
    if not isinstance(cfg, dict):
        return cfg
    cfg = dict(cfg)
    cfg.setdefault("_scope_", SCOPE)
    return registry.build(cfg)


__all__.append("build_in_vzoo_scope")

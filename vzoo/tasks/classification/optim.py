"""AdamW param groups the way timm's / DeiT's training scripts make them: no weight decay on
1-D parameters (norms, biases) and on the model's ``no_weight_decay()`` names (position embeddings,
class tokens, relative-position tables ...)."""
from __future__ import annotations

from mmengine.model import is_model_wrapper
from mmengine.optim import DefaultOptimWrapperConstructor
from timm.optim import param_groups_weight_decay

from ..registry import OPTIM_WRAPPER_CONSTRUCTORS

__all__ = ["TimmOptimWrapperConstructor"]


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class TimmOptimWrapperConstructor(DefaultOptimWrapperConstructor):

    def add_params(self, params, module, prefix: str = "", is_dcn_module=None) -> None:
        if is_model_wrapper(module):
            module = module.module
        net = getattr(module, "model", module)  # TimmClassifier.model is the timm network
        wd = self.optimizer_cfg.get("weight_decay", 0.0)
        skip = set(net.no_weight_decay()) if hasattr(net, "no_weight_decay") else set()
        params.extend(param_groups_weight_decay(net, weight_decay=wd, no_weight_decay_list=skip))

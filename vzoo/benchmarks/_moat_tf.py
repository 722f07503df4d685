"""deeplab2's TensorFlow MOAT, run next to vzoo's for ``tools/parity.py moat`` (needs TensorFlow, which
vzoo does not depend on: install it in a separate environment, see ``docs/benchmarks.md``).

The round trip checked for one variant:

1. deeplab2's ``model/pixel_encoder/moat.py`` (with ``model/layers/moat_blocks.py``,
   ``moat_attention.py`` and ``utils/hparam_configs.py``) is imported from the user's checkout and the
   model is built with deeplab2's own config for the variant (``get_model(..., return_config=True)``:
   the release's stem/widths/depths, global attention, the given ``pool_size``) and a 1000-class head;
2. every variable gets random values (kernels ~ N(0, 1/fan_in), norm scales/shifts and biases off
   1/0, BatchNorm moving mean/variance random, relative position tables N(0, 1)); deeplab2 derives its
   resized, re-indexed position bias from the table inside ``Attention.build``, so that ``build`` is run
   again on the new values;
3. the variables are written as a TF1 name-based checkpoint — the release's layout: the variables'
   names, ``moat/stem/conv_0/kernel``, ``moat/block_02_00/attention/q/weight``,
   ``.../depthwise_conv/depthwise_kernel`` (Keras 2's name, which the release has), plus the
   ``.../ExponentialMovingAverage`` copies, optimizer slots and ``global_step`` a training checkpoint
   carries, with different values, so that picking them by mistake shows;
4. the TF model is run in inference mode (``training=False``) on a seeded NHWC batch: logits, and the
   ``res2``..``res5`` endpoints (deeplab2's MOAT returns them when built without a head);
5. the checkpoint is converted by ``tools/convert.py`` (the caller passes a function running it) and loaded
   with ``timm.create_model(NAME, pretrained=True, pretrained_cfg_overlay=dict(file=...))``; vzoo runs the
   NCHW batch and its ``forward_intermediates`` give the endpoints.

deeplab2 was written for Keras 2 (``tf.keras`` before TF 2.16). Under Keras 3 (TF >= 2.16, e.g. 2.21)
five API changes stop it from building, and :func:`keras_compat` bridges them without changing any
arithmetic: ``SyncBatchNormalization`` (a plain ``BatchNormalization``: the same eps 1e-3 and momentum;
the sync only matters when training on several replicas), Keras 3's wrapping of attributes that are
``dict``s (deeplab2's ``Config`` is one), shapes given to ``build`` as tuples, ``add_weight``'s
positional name and a ``training`` argument Keras 3 does not fill in. Keras 3 also calls the depthwise
kernel ``kernel``; the checkpoint is written with Keras 2's ``depthwise_kernel`` as released. This was
run with TensorFlow 2.21 / Keras 3.15 only.
"""
from __future__ import annotations

import importlib
import os
import sys
import types
from typing import Callable, List, Tuple

import numpy as np
import torch

from ._official import OfficialSourceError

__all__ = ["DEEPLAB2_NAMES", "load_official_moat", "keras_compat", "build_official_moat", "run_check"]

# vzoo variant -> deeplab2's model name (get_model / _get_moat_config_via_model_name)
DEEPLAB2_NAMES = {
    "moat_0": "moat0_pretrain_224_1k", "moat_1": "moat1_pretrain_224_1k", "moat_2": "moat2_finetune_384_22k",
    "moat_3": "moat3_finetune_512_22k", "moat_4": "moat4_finetune_512_22k",
    "tiny_moat_0": "tiny_moat0_pretrain_256_1k", "tiny_moat_1": "tiny_moat1_pretrain_256_1k",
    "tiny_moat_2": "tiny_moat2_pretrain_256_1k", "tiny_moat_3": "tiny_moat3_pretrain_256_1k",
}
_EMA = "/ExponentialMovingAverage"


def _import_tensorflow():
    # timm (through torch._dynamo) loads Triton's native library; loading it after TensorFlow's crashes
    # the process (seen with TF 2.21 and the pinned torch/Triton), before it the two coexist.
    import timm  # noqa: F401
    import torch._dynamo  # noqa: F401

    import vzoo  # noqa: F401
    try:
        import tensorflow as tf
    except ImportError:
        raise OfficialSourceError(
            "the MOAT parity check runs deeplab2's TensorFlow model and needs TensorFlow, which is not "
            "importable here. vzoo does not depend on it: make a separate environment with it and vzoo's "
            "packages (see 'MOAT' under 'Parity with the official implementations' in docs/benchmarks.md)"
        ) from None
    return tf


def keras_compat(tf, moat_attention, hparam_configs) -> None:
    """Let deeplab2's Keras 2 MOAT build under Keras 3 (see the module docstring), and make its
    ``Attention`` rebuildable on new weights (``build`` keeps its input shape, ``add_weight`` hands back
    the variable it made the first time), under either Keras."""
    import keras
    keras3 = int(keras.__version__.split(".")[0]) >= 3
    if keras3 and not hasattr(tf.keras.layers, "experimental"):
        tf.keras.layers.experimental = types.SimpleNamespace(SyncBatchNormalization=keras.layers.BatchNormalization)
    if keras3:
        from keras.src.utils import tracking
        if not getattr(tracking.Tracker.track, "_vzoo_compat", False):
            track = tracking.Tracker.track
            Config = hparam_configs.Config

            def track_but_configs(self, attr):  # Keras 3 would copy a Config (a dict) into a TrackedDict
                return attr if isinstance(attr, Config) else track(self, attr)
            track_but_configs._vzoo_compat = True
            tracking.Tracker.track = track_but_configs

    for cls in (moat_attention.TrailDense, moat_attention.Attention):
        if cls.__dict__.get("_vzoo_compat", False):
            continue
        cls.build, cls.add_weight = _rebuildable(tf, cls.build, cls.add_weight)
        cls._vzoo_compat = True
    if keras3 and not getattr(moat_attention.Attention.call, "_vzoo_compat", False):
        call = moat_attention.Attention.call

        def attention_call(self, query, training=None):  # Keras 2 filled 'training' in; Attention ignores it
            return call(self, query, training)
        attention_call._vzoo_compat = True
        moat_attention.Attention.call = attention_call


def _rebuildable(tf, build, add_weight):
    # Keras 3 reads build()'s signature: it must keep exactly one argument besides self
    def build_with_tensorshape(self, input_shape):  # Keras 3 passes a tuple, deeplab2 wants a TensorShape
        self._vzoo_build_shape = tf.TensorShape(input_shape)
        return build(self, self._vzoo_build_shape)

    def add_weight_once(self, name=None, shape=None, **kwargs):  # Keras 2 took the name positionally
        made = self.__dict__.setdefault("_vzoo_weights", {})
        if name not in made:
            made[name] = add_weight(self, name=name, shape=shape, **kwargs)
        return made[name]
    return build_with_tensorshape, add_weight_once


def load_official_moat(root: str) -> types.SimpleNamespace:
    """Import deeplab2's MOAT from the checkout ``root`` (its files import ``deeplab2.…``: the checkout is
    made that package for the import, whatever its directory is called)."""
    tf = _import_tensorflow()
    for req in ("yaml",):  # deeplab2's hparam_configs imports it
        if importlib.util.find_spec(req) is None:
            raise OfficialSourceError(f"deeplab2's utils/hparam_configs.py needs {req!r} (pip install pyyaml)")
    names = ("deeplab2.model.pixel_encoder.moat", "deeplab2.model.layers.moat_attention",
             "deeplab2.utils.hparam_configs")
    saved = {k: v for k, v in sys.modules.items() if k == "deeplab2" or k.startswith("deeplab2.")}
    for k in saved:
        del sys.modules[k]
    pkg = types.ModuleType("deeplab2")
    pkg.__path__ = [os.path.abspath(root)]
    pkg.__spec__ = importlib.machinery.ModuleSpec("deeplab2", None, is_package=True)
    pkg.__spec__.submodule_search_locations = pkg.__path__
    try:  # (no sys.path entry needed: the package's __path__ is the checkout)
        sys.modules["deeplab2"] = pkg
        mods = [importlib.import_module(n) for n in names]
    finally:
        for k in [k for k in sys.modules if k == "deeplab2" or k.startswith("deeplab2.")]:
            del sys.modules[k]
        sys.modules.update(saved)
    moat_lib, moat_attention, hparam_configs = mods
    keras_compat(tf, moat_attention, hparam_configs)
    return types.SimpleNamespace(tf=tf, moat=moat_lib, attention=moat_attention)


def build_official_moat(ns, variant: str, img_size: int, pool_size: int = 2):
    """deeplab2's MOAT for ``variant`` (global attention, 1000 classes), built for ``img_size``."""
    tf = ns.tf
    cfg = ns.moat.get_model(DEEPLAB2_NAMES[variant], input_shape=(img_size, img_size, 3), window_size=None,
                            pool_size=pool_size, return_config=True,
                            override_config=dict(build_classification_head_with_class_num=1000))
    model = ns.moat.MOAT(**cfg)
    model(tf.zeros([1, img_size, img_size, 3]), training=False)  # builds every layer for this size
    return model


def _var_name(v) -> str:
    """The variable's name in the release's checkpoint layout."""
    name = getattr(v, "path", None) or v.name.split(":")[0]
    if name.startswith(("conv_", "norm_")):  # Keras 2's Sequential stem drops the scope; the release has it
        name = "moat/stem/" + name
    if name.endswith("depthwise_conv/kernel"):  # Keras 3's name; Keras 2 (the release): depthwise_kernel
        name = name[:-len("kernel")] + "depthwise_kernel"
    return name


def _randomize(model, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for v in model.variables:
        n, shape = _var_name(v), tuple(v.shape)
        if n.endswith("moving_mean"):
            val = 0.1 * rng.standard_normal(shape)
        elif n.endswith("moving_variance"):
            val = 0.5 + 1.5 * rng.random(shape)
        elif n.endswith("relative_position_embedding"):
            val = rng.standard_normal(shape)
        elif n.endswith("gamma"):
            val = 1 + 0.1 * rng.standard_normal(shape)
        elif len(shape) <= 1 or n.endswith("/bias"):
            val = 0.1 * rng.standard_normal(shape)
        else:  # kernels: unit-variance outputs keep a deep random net's activations in range
            if n.endswith("depthwise_kernel"):
                fan_in = shape[0] * shape[1]
            elif n.endswith("/o/weight"):
                fan_in = shape[0] * shape[1]
            elif n.endswith("/weight"):
                fan_in = shape[0]
            else:
                fan_in = int(np.prod(shape[:-1]))
            val = rng.standard_normal(shape) / np.sqrt(fan_in)
        v.assign(val.astype(np.float32))


def save_release_checkpoint(ns, model, path: str) -> str:
    """Write ``model``'s variables as a TF1 name-based checkpoint in the release's layout (see the module
    docstring), with EMA copies, momentum slots and a global step; returns the checkpoint prefix."""
    tf = ns.tf
    tvars = {}
    for v in model.variables:
        name, val = _var_name(v), v.numpy()
        tvars[name] = tf.Variable(val)
        if v.trainable:
            tvars[name + _EMA] = tf.Variable(val + 0.5)
            tvars[name + "/Momentum"] = tf.Variable(np.full(val.shape, 3.0, val.dtype))
    tvars["global_step"] = tf.Variable(np.int64(312_000))
    saver = tf.compat.v1.train.Saver(var_list=tvars)
    return saver.save(None, os.path.join(path, "model.ckpt"), global_step=312_000)


def run_check(ns, variant: str, img_size: int, batch: int, seed: int, workdir: str,
              convert: Callable[[str, str, str], None], pool_size: int = 2
              ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, List[tuple]]:
    """Steps 1–5 of the module docstring: ``(x NCHW, TF logits, vzoo logits, [(endpoint, TF, vzoo)])``,
    endpoints as NCHW. ``convert(variant, src, dst)`` converts the checkpoint ``src`` into ``dst``."""
    import timm
    tf = ns.tf
    model = build_official_moat(ns, variant, img_size, pool_size)
    _randomize(model, seed)
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, ns.attention.Attention):  # the resized, re-indexed position bias of the new table
            layer.build(layer._vzoo_build_shape)
    ckpt_dir = os.path.join(workdir, f"{variant}_tf")
    save_release_checkpoint(ns, model, ckpt_dir)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(batch, img_size, img_size, 3, generator=g)  # NHWC, as TF takes it
    ref = torch.from_numpy(model(tf.constant(x.numpy()), training=False).numpy())
    model._config.build_classification_head_with_class_num = None  # deeplab2's MOAT then returns endpoints
    try:
        eps = model(tf.constant(x.numpy()), training=False)
    finally:
        model._config.build_classification_head_with_class_num = 1000
    keys = ("res2", "res3", "res4", "res5")
    eps = {k: torch.from_numpy(eps[k].numpy()).permute(0, 3, 1, 2) for k in keys}
    dst = os.path.join(workdir, f"{variant}.safetensors")
    convert(variant, ckpt_dir, dst)
    ours = timm.create_model(variant, pretrained=True, pretrained_cfg_overlay=dict(file=dst),
                             pool_size=pool_size).eval()
    xc = x.permute(0, 3, 1, 2).contiguous()
    with torch.inference_mode():
        out = ours(xc)
        feats = ours.forward_intermediates(xc, intermediates_only=True)
    return xc, ref, out, [(f"{k} endpoint", eps[k], f) for k, f in zip(keys, feats)]

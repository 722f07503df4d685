"""MOAT (``google-research/deeplab2``, TensorFlow): the whole round trip is :mod:`vzoo.benchmarks._moat_tf`'s
(release-layout TF1 checkpoint, ``tools/convert.py``, timm's pretrained path, logits and res2..res5)."""
from pathlib import Path

from ._core import Family

_TOOLS = Path(__file__).resolve().parents[3] / "tools"


def _load(root, rel):
    from .._moat_tf import load_official_moat  # imports TensorFlow (not a vzoo dependency)
    return load_official_moat(root)


def _convert(variant, src, dst):
    """``tools/convert.py moat --src SRC --dst DST --variant VARIANT``, in this process."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("_vzoo_convert_tool", _TOOLS / "convert.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    try:
        tool.main(["moat", "--src", src, "--dst", dst, "--variant", variant])
    except SystemExit as e:  # the tool's refusals: one row's error, not the end of the run
        raise RuntimeError(f"tools/convert.py: {e}") from None


def _round_trip(ns, variant, img_size, batch, seed, workdir):
    from .._moat_tf import run_check
    return run_check(ns, variant, img_size, batch, seed, workdir, convert=_convert)


def _not_torch(*a, **k):
    raise RuntimeError("the MOAT release is TensorFlow: its round trip is Family.round_trip")


SPEC = Family(
    repo="google-research/deeplab2", candidates=("model/pixel_encoder/moat.py",),
    variants=("tiny_moat_0", "tiny_moat_1", "tiny_moat_2", "tiny_moat_3", "moat_0", "moat_1"),
    extra_variants=("moat_2", "moat_3", "moat_4"),
    load=_load, build_official=_not_torch, save=_not_torch, round_trip=_round_trip, img_size=256,
    notes="the official model is TensorFlow (needs TensorFlow, not a vzoo dependency; Keras 3 API shims in "
          "vzoo/benchmarks/_moat_tf.py, no arithmetic changed), built with deeplab2's own config (global "
          "attention, shortcut pool 2, 1000 classes), random weights and BatchNorm moving statistics, saved as "
          "a TF1 name-based checkpoint in the release's layout (with EMA copies and optimizer slots), converted "
          "by tools/convert.py, loaded through timm; rows 'resN endpoint' compare deeplab2's res2..res5 "
          "endpoints with vzoo's forward_intermediates; input NHWC for TF, the same values NCHW for vzoo")

#!/usr/bin/env python
"""Convert an official checkpoint into vzoo's own format.

    python tools/convert.py MODEL SRC DST.safetensors [--no-verify-sha]
    python tools/convert.py FAMILY --src SRC --dst DST.safetensors --variant MODEL   # e.g. moat --variant moat_0

1. looks MODEL up in the checkpoint index (vzoo/data/checkpoint_index/*.json) and refuses SRC when its
   sha256 disagrees with the one the index pins; where the index pins none (sha256 null), it says so
   and prints SRC's sha256 for a maintainer to record (a TensorFlow checkpoint directory has no single
   file to hash);
2. reads SRC without executing pickled code (or, for a TensorFlow release, through the family's
   ``convert_tf_checkpoint``), maps its keys with the family's ``checkpoint_filter_fn`` and checks
   every key by building the model with ``timm.create_model(MODEL, pretrained=True, ...)``;
3. writes DST atomically as safetensors, with the model name, its pretrained cfg and the source's
   sha256 in the file's metadata; then loads DST back and checks the outputs are identical.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

import timm
import torch
from safetensors.torch import save_file

import vzoo
from vzoo.checkpoint_index import load_index, sha256_file
from vzoo.models import load_checkpoint_file
from vzoo.utils import atomic_write


def read_source(model: str, src: str, fmt: str):
    family = importlib.import_module(timm.models.model_entrypoint(model).__module__)
    if fmt in ("torch", "safetensors", "basicsr"):
        # a family whose release container needs more than plain tensors (EViT's main.py saves its
        # argparse Namespace) reads it with its own, still weights_only, loader
        return getattr(family, "load_release_checkpoint", load_checkpoint_file)(src)
    # non-PyTorch releases: the family module converts them (e.g. convert_tf_checkpoint)
    fn = getattr(family, f"convert_{fmt}_checkpoint", None)
    if fn is None:
        raise SystemExit(f"convert.py: {family.__name__} has no convert_{fmt}_checkpoint for format={fmt!r}")
    try:
        return fn(src)
    except ImportError as e:  # e.g. TensorFlow for format='tf': say which extra to install, in one line
        raise SystemExit(f"convert.py: {e}") from None


def convert(model: str, src: str, dst: str, verify_sha: bool = True, index_dir=None) -> dict:
    index = load_index(index_dir)
    if model not in index:
        raise SystemExit(f"convert.py: {model!r} is not in the checkpoint index (vzoo/data/checkpoint_index/*.json); "
                         f"indexed: {', '.join(sorted(index))}")
    entry = index[model]
    if not dst.endswith(".safetensors"):  # vzoo reads weights files by suffix: a .pth would be torch.load-ed
        raise SystemExit(f"convert.py: DST {dst!r} must end with .safetensors (the file written is safetensors, "
                         f"and vzoo picks the reader by the suffix)")
    tf_prefix = entry["format"] == "tf" and (os.path.isdir(src) or os.path.isfile(src + ".index"))
    if not (os.path.isfile(src) or tf_prefix):
        raise SystemExit(f"convert.py: SRC {src!r} does not exist")
    digest = sha256_file(src) if os.path.isfile(src) else ""  # a TF checkpoint directory/prefix: no single file
    if verify_sha and entry["sha256"] and digest != entry["sha256"]:
        raise SystemExit(f"convert.py: refusing {src!r}: its sha256 is {digest}, the index says "
                         f"{entry['sha256']} for {model} ({entry['source']}). Wrong or damaged download?")
    if not entry["sha256"] and digest:
        print(f"convert.py: the index pins no sha256 for {model}, so {src!r} is not checked; its sha256 is "
              f"{digest}: once the file is known good, record it in {entry['index_file']}", file=sys.stderr)
    state_dict = read_source(model, src, entry["format"])
    net = timm.create_model(model, pretrained=True, pretrained_cfg_overlay=dict(state_dict=state_dict)).eval()
    out = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    meta = {
        "vzoo_model": model,
        "vzoo_version": vzoo.__version__,
        "source": entry["source"],
        "source_sha256": digest,
        "pretrained_cfg": json.dumps(net.pretrained_cfg, default=str),
    }
    with atomic_write(dst) as tmp:  # DST is either the old file or the complete new one
        save_file(out, tmp, metadata=meta)
    # round trip: the written file gives the same outputs as the converted model
    back = timm.create_model(model, pretrained=True, pretrained_cfg_overlay=dict(file=dst)).eval()
    size = tuple((net.pretrained_cfg.get("min_input_size") or (3, 64, 64)))
    x = torch.randn(1, *size)
    with torch.no_grad():
        err = (back(x) - net(x)).abs().max().item()
    if err != 0:
        raise SystemExit(f"convert.py: {dst} does not reproduce the converted model (max abs diff {err})")
    return dict(model=model, keys=len(out), src_sha256=digest, dst=dst)


def _parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="timm model name, as in the checkpoint index (or a family name with --variant)")
    p.add_argument("src", nargs="?", help="the official checkpoint file (or TF checkpoint directory/prefix)")
    p.add_argument("dst", nargs="?", help="where to write vzoo's safetensors file")
    p.add_argument("--src", dest="src_opt", help="the same as SRC")
    p.add_argument("--dst", dest="dst_opt", help="the same as DST")
    p.add_argument("--variant", help="with a family name as MODEL (e.g. moat): the model to convert to")
    p.add_argument("--no-verify-sha", action="store_true", help="skip the sha256 check against the index")
    a = p.parse_args(argv)
    a.src = a.src if a.src is not None else a.src_opt
    a.dst = a.dst if a.dst is not None else a.dst_opt
    if a.src is None or a.dst is None:
        p.error("SRC and DST are required (positionally or as --src/--dst)")
    if a.variant is not None:
        from vzoo.models import model_family
        if not timm.is_model(a.variant):
            p.error(f"--variant {a.variant!r} is not a registered model")
        if a.variant != a.model and model_family(a.variant) != a.model:
            p.error(f"--variant {a.variant!r} belongs to family {model_family(a.variant)!r}, not {a.model!r}")
        a.model = a.variant
    return a


def main(argv=None):
    a = _parse(argv)
    info = convert(a.model, a.src, a.dst, verify_sha=not a.no_verify_sha)
    print(f"converted {info['model']}: {info['keys']} tensors, source sha256 {info['src_sha256']}, wrote {info['dst']}")


if __name__ == "__main__":
    sys.exit(main())

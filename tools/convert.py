#!/usr/bin/env python
"""Convert an official checkpoint into vzoo's own format (the converter ``pretrained=True`` uses too).

    python tools/convert.py MODEL SRC DST.safetensors [--no-verify-sha] [--record]
    python tools/convert.py FAMILY --src SRC --dst DST.safetensors --variant MODEL   # e.g. moat --variant moat_0
    python tools/convert.py MODEL [--dst DST.safetensors] [--record]   # no SRC: download the index's source
    python tools/convert.py all --record                               # every downloadable, unpinned entry

1. looks MODEL up in the checkpoint index (vzoo/data/checkpoint_index/*.json) and refuses SRC when its
   sha256 disagrees with the one the index pins; where the index pins none (sha256 null), it says so
   and prints SRC's sha256 for a maintainer to record (a TensorFlow checkpoint directory has no single
   file to hash); ``--record`` writes it into the index file;
2. reads SRC without executing pickled code (or, for a TensorFlow release, through the family's
   ``convert_tf_checkpoint``), maps its keys with the family's ``checkpoint_filter_fn`` and checks
   every key by building the model with ``timm.create_model(MODEL, pretrained=True, ...)``
   (``vzoo.hub.convert_checkpoint``);
3. writes DST atomically as safetensors (mode as any new file: 0o666 less the umask), with the model
   name, its pretrained cfg and the source's sha256 in the file's metadata; then loads DST back and
   checks the outputs are identical.

Without SRC the file is fetched as ``pretrained=True`` fetches it (``vzoo.hub.fetch_pretrained``: download,
sha256 check, conversion into ``$VZOO_CACHE/checkpoints/``), then copied to DST if one is given.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys

import timm
import torch

from vzoo.checkpoint_index import load_index, record_sha256, sha256_file
from vzoo.hub import DownloadError, convert_checkpoint, fetch_pretrained, source_sha256
from vzoo.models import CheckpointError
from vzoo.utils import atomic_write


def _entry(model: str, index_dir=None) -> dict:
    index = load_index(index_dir)
    if model not in index:
        raise SystemExit(f"convert.py: {model!r} is not in the checkpoint index (vzoo/data/checkpoint_index/*.json); "
                         f"indexed: {', '.join(sorted(index))}")
    return index[model]


def convert(model: str, src: str, dst: str, verify_sha: bool = True, index_dir=None, record: bool = False) -> dict:
    entry = _entry(model, index_dir)
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
    if not entry["sha256"] and digest and not record:
        print(f"convert.py: the index pins no sha256 for {model}, so {src!r} is not checked; its sha256 is "
              f"{digest}: once the file is known good, record it in {entry['index_file']} (--record)", file=sys.stderr)
    try:
        net = convert_checkpoint(model, src, dst, fmt=entry["format"],
                                 metadata={"source": entry["source"] or "", "source_sha256": digest})
    except ImportError as e:  # e.g. TensorFlow for format='tf': say which extra to install, in one line
        raise SystemExit(f"convert.py: {e}") from None
    except CheckpointError as e:
        raise SystemExit(f"convert.py: {e}") from None
    # round trip: the written file gives the same outputs as the converted model
    back = timm.create_model(model, pretrained=True, pretrained_cfg_overlay=dict(file=dst)).eval()
    size = tuple((net.pretrained_cfg.get("min_input_size") or (3, 64, 64)))
    x = torch.randn(1, *size)
    with torch.no_grad():
        err = (back(x) - net(x)).abs().max().item()
    if err != 0:
        raise SystemExit(f"convert.py: {dst} does not reproduce the converted model (max abs diff {err})")
    if record and digest and digest != entry["sha256"]:
        print(f"convert.py: recorded sha256 {digest} for {model} in {record_sha256(model, digest, index_dir)}",
              file=sys.stderr)
    return dict(model=model, keys=len(net.state_dict()), src_sha256=digest, dst=dst)


def fetch(model: str, dst: str | None = None, index_dir=None, record: bool = False) -> dict:
    """Download, verify and convert MODEL's official weights as ``pretrained=True`` does; copy the cached
    file to ``dst`` if given; with ``record``, write the source's sha256 into the index."""
    entry = _entry(model, index_dir)
    if not timm.models.model_entrypoint(model).__module__.startswith("vzoo."):
        raise SystemExit(f"convert.py: {model} is a timm model: timm.create_model({model!r}, pretrained=True) "
                         f"loads {entry['source']} itself (Hugging Face)")
    try:
        cached = fetch_pretrained(model, index_dir=index_dir)
    except (DownloadError, CheckpointError, ImportError) as e:
        raise SystemExit(f"convert.py: {e}") from None
    digest = source_sha256(cached) or ""
    if dst:
        with atomic_write(dst) as tmp:
            shutil.copyfile(cached, tmp)
    if record and digest and digest != entry["sha256"]:
        print(f"convert.py: recorded sha256 {digest} for {model} in {record_sha256(model, digest, index_dir)}",
              file=sys.stderr)
    return dict(model=model, keys=None, src_sha256=digest, dst=dst or str(cached))


def _parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="timm model name, as in the checkpoint index (or a family name with --variant)")
    p.add_argument("src", nargs="?", help="the official checkpoint file (or TF checkpoint directory/prefix)")
    p.add_argument("dst", nargs="?", help="where to write vzoo's safetensors file")
    p.add_argument("--src", dest="src_opt", help="the same as SRC")
    p.add_argument("--dst", dest="dst_opt", help="the same as DST")
    p.add_argument("--variant", help="with a family name as MODEL (e.g. moat): the model to convert to")
    p.add_argument("--no-verify-sha", action="store_true", help="skip the sha256 check against the index")
    p.add_argument("--record", action="store_true",
                   help="write the source's sha256 into the checkpoint index (MODEL 'all': every unpinned entry)")
    a = p.parse_args(argv)
    a.src = a.src if a.src is not None else a.src_opt
    a.dst = a.dst if a.dst is not None else a.dst_opt
    if a.src is not None and a.dst is None:
        p.error("DST is required with SRC (positionally or as --dst)")
    if a.model == "all" and not (a.record and a.src is None and a.dst is None):
        p.error("MODEL 'all' is only for --record without SRC/DST")
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
    if a.model == "all":  # a maintainer with network access fills the index in one run
        failed = []
        for name, entry in sorted(load_index().items()):
            if entry["sha256"] or not entry["source"] or not entry.get("downloadable", True) \
                    or not timm.models.model_entrypoint(name).__module__.startswith("vzoo."):
                continue
            try:
                fetch(name, record=True)
            except SystemExit as e:
                failed.append(name)
                print(e, file=sys.stderr)
        return 1 if failed else 0
    if a.src is None:
        info = fetch(a.model, a.dst, record=a.record)
        print(f"fetched {info['model']}: source sha256 {info['src_sha256']}, wrote {info['dst']}")
        return 0
    info = convert(a.model, a.src, a.dst, verify_sha=not a.no_verify_sha, record=a.record)
    print(f"converted {info['model']}: {info['keys']} tensors, source sha256 {info['src_sha256']}, wrote {info['dst']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

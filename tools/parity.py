#!/usr/bin/env python
"""Check that vzoo reproduces the official implementation's outputs, from an official-format checkpoint.

    python tools/parity.py FAMILY --official-src DIR [--variants ...] [--img-size N] [--batch B]
                           [--json OUT] [--markdown docs/benchmarks.md]
    python tools/parity.py --list

For each variant the tool

1. imports the official model definition from ``DIR``, a local checkout of the family's official
   repository (vzoo ships no official code; see :mod:`vzoo.benchmarks._official`);
2. builds the official model with random weights (seeded), every parameter moved off its init and
   the BatchNorm running statistics randomised too, so that each of them changes the output;
3. saves its ``state_dict`` as the release does (``{'model': sd}``, BasicSR ``{'params_ema': sd}``,
   a DataParallel ``{'state_dict': {'module.' + k: v}}``, ...);
4. loads that file with ``timm.create_model(NAME, pretrained=True, pretrained_cfg_overlay=dict(file=PATH))``,
   i.e. through the family's ``checkpoint_filter_fn`` (ULSAM, released as a module only: through
   ``vzoo.layers.ULSAM.load_state_dict``);
5. runs both in eval mode, fp32, on the CPU, on the same seeded batch, and prints one row per variant:
   max |vzoo - official|, max relative error ``max|vzoo - official| / max|official|``, output shape.

The exit status is 1 if any variant's relative error is >= ``--tol`` (default 1e-4) or fails to run,
2 for a bad command line (e.g. ``--official-src`` without the expected file).

MOAT's official code is TensorFlow (``google-research/deeplab2``): ``tools/parity.py moat`` needs TensorFlow
importable next to vzoo (it is no vzoo dependency; without it the tool says so and exits with 2) and runs
the TensorFlow round trip of :mod:`vzoo.benchmarks._moat_tf` instead of steps 2–5: release-layout TF1
checkpoint, ``tools/convert.py``, timm's pretrained path, logits and the res2..res5 endpoints compared.

``--markdown FILE`` rewrites this family's block (between ``<!-- parity:FAMILY -->`` markers) of the
"Parity with the official implementations" section of FILE, creating the section if it is missing,
with the date, the device and the command; the rest of FILE (``tools/benchmark.py``'s sections) is kept.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from vzoo.benchmarks._markdown import write_block  # noqa: E402
from vzoo.benchmarks._official import OfficialSourceError, find_official_file, import_official  # noqa: E402

SECTION_TITLE = "Parity with the official implementations"
DEFAULT_TOL = 1e-4


# ---------------------------------------------------------------------------------------------- core
def randomize_(model: nn.Module, seed: int) -> nn.Module:
    """Move every parameter of ``model`` off its initial value and randomise BatchNorm running stats.

    Constant inits (biases and norm shifts at 0, norm scales at 1, layer scales at 1e-2) would hide a
    wrong mapping of those tensors, and BatchNorm running stats at 0/1 would hide a swapped mean/var.
    Relative-position bias tables get unit-scale values so that their indexing shows in the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32).to(p.dtype)
            if "relative_position_bias_table" in name:
                p.copy_(noise)
            elif p.dim() <= 1:  # biases, norm affines, layer scales: spread around their init's scale
                p.add_(0.1 * max(p.float().abs().mean().item(), 0.1) * noise)
            else:
                std = p.float().std().item() if p.numel() > 1 else 0.0
                p.add_(0.5 * max(std, 0.02) * noise)
        for mod in model.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm) and mod.running_mean is not None:
                mod.running_mean.copy_(0.1 * torch.randn(mod.running_mean.shape, generator=g))
                mod.running_var.copy_(0.5 + 1.5 * torch.rand(mod.running_var.shape, generator=g))
    return model


def compare(out: torch.Tensor, ref: torch.Tensor) -> Dict[str, float]:
    """``max_abs = max|out - ref|`` and ``max_rel = max_abs / max|ref|`` (shapes must agree)."""
    if tuple(out.shape) != tuple(ref.shape):
        raise ValueError(f"output shapes differ: vzoo {tuple(out.shape)} vs official {tuple(ref.shape)}")
    out, ref = out.detach().double(), ref.detach().double()
    if not torch.isfinite(ref).all() or not torch.isfinite(out).all():
        raise ValueError("non-finite outputs (official finite: %s, vzoo finite: %s)"
                         % (bool(torch.isfinite(ref).all()), bool(torch.isfinite(out).all())))
    max_abs = (out - ref).abs().max().item()
    scale = ref.abs().max().item()
    return dict(max_abs=max_abs, max_rel=max_abs / scale if scale > 0 else float("inf") if max_abs else 0.0)


# ------------------------------------------------------------------------------------------ families
def _save_torch(obj, path):
    torch.save(obj, path)


def _timm_loader(name: str, path: str) -> nn.Module:
    import timm

    import vzoo  # noqa: F401  (registers the models)
    return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=path))


def _identity_run(model, variant):
    return model


@dataclass
class Family:
    """How one family's official code is found, built, saved and compared."""
    repo: str
    candidates: Sequence[str]  # official files, relative to a checkout ('//' marks the import root)
    variants: Sequence[str]
    load: Callable[[str, str], object]  # (root, relpath) -> namespace the builders read
    build_official: Callable[[object, str], nn.Module]
    save: Callable[[Dict[str, torch.Tensor], str, str], None]  # (state_dict, path, variant)
    img_size: int = 224
    batch: int = 2
    make_input: Optional[Callable[[str, int, int, torch.Generator], torch.Tensor]] = None
    load_vzoo: Callable[[str, str], nn.Module] = _timm_loader
    official_run: Callable[[nn.Module, str], Callable] = _identity_run
    extra_variants: Sequence[str] = ()
    # (official, vzoo, input) -> [(label, official tensor, vzoo tensor)]: more comparisons, one row each
    inner: Optional[Callable[[nn.Module, nn.Module, torch.Tensor], list]] = None
    notes: str = ""
    # a non-PyTorch official model runs its whole round trip itself:
    # (namespace, variant, img_size, batch, seed, workdir) -> (input, official out, vzoo out, inner rows)
    round_trip: Optional[Callable[[object, str, int, int, int, str], tuple]] = None


def _image_input(variant, batch, size, g):
    return torch.randn(batch, 3, size, size, generator=g)


# VAN ----------------------------------------------------------------------------------------------
def _load_van(root, rel):
    return import_official(root, "models.van")


VAN = Family(
    repo="Visual-Attention-Network/VAN-Classification", candidates=("models/van.py",),
    variants=("van_b0", "van_b1", "van_b2", "van_b3"), extra_variants=("van_b4", "van_b5", "van_b6"),
    load=_load_van, build_official=lambda mod, v: getattr(mod, v)(),
    # the release files (van_*.pth.tar) are timm train.py checkpoints: weights under 'state_dict'
    save=lambda sd, path, v: _save_torch({"epoch": 310, "arch": v, "state_dict": sd}, path),
    notes="release format: timm train.py checkpoint, weights under 'state_dict'")


# FaViT --------------------------------------------------------------------------------------------
FAVIT = Family(
    repo="q2479036243/FaViT",
    candidates=("FaViT/classification//favit.py", "classification//favit.py", "favit.py"),
    variants=("favit_b0", "favit_b1", "favit_b2", "favit_b3"),
    load=lambda root, rel: import_official(root, "favit"), build_official=lambda mod, v: getattr(mod, v)(),
    # DeiT-style main.py: utils.save_on_master({'model': ..., 'optimizer': ..., 'epoch': ...})
    save=lambda sd, path, v: _save_torch({"model": sd, "epoch": 299}, path),
    notes="release format: DeiT main.py checkpoint, weights under 'model'")


# BiFormer -----------------------------------------------------------------------------------------
def _load_biformer(root, rel):
    from vzoo.benchmarks.bra import load_official_biformer  # the 'bra' suite's loader, shared
    return load_official_biformer(root)


def _build_biformer(mods, v):
    mod = mods["models.biformer_stl" if v == "biformer_stl" else "models.biformer"]
    return getattr(mod, v)()


BIFORMER = Family(
    repo="rayleizhu/BiFormer", candidates=("models/biformer.py",),
    variants=("biformer_tiny", "biformer_small", "biformer_base", "biformer_stl"),
    load=_load_biformer, build_official=_build_biformer, batch=1,
    save=lambda sd, path, v: _save_torch({"model": sd, "epoch": 299}, path),
    notes="release format: weights under 'model'; official BRA from ops/bra_legacy.py")


# HAT ----------------------------------------------------------------------------------------------
def _load_hat(root, rel):
    from vzoo.benchmarks.hat import load_official_hat  # the 'hat' suite's loader, shared
    return load_official_hat(root)


def _build_hat(Official, v):
    from vzoo.benchmarks.hat import official_kwargs
    return Official(**official_kwargs(v))


def _hat_run(model, v):
    from vzoo.benchmarks.hat import _padded
    scale = int(v.rsplit("_x", 1)[1])
    return _padded(model, 16, scale)  # the official test: reflect-pad to the window, crop the output


def _hat_body(official, ours, x):
    """The residual groups' output (after the final LayerNorm, before ``conv_after_body`` and the long skip
    from the shallow features, which dominate the image): where the attention blocks act."""
    import torch.nn.functional as F
    h, w = x.shape[-2:]
    xp = F.pad(x, (0, (-w) % 16, 0, (-h) % 16), mode="reflect")
    ref = official.forward_features(official.conv_first((xp - official.mean) * official.img_range))[..., :h, :w]
    out = ours.forward_intermediates(x, indices=[len(ours.groups) - 1], norm=True, intermediates_only=True)[-1]
    return [("deep features", ref, out)]


HAT = Family(
    repo="XPixelGroup/HAT", candidates=("hat/archs/hat_arch.py",),
    variants=("hat_s_x2", "hat_s_x3", "hat_s_x4", "hat_x2", "hat_x3", "hat_x4"),
    extra_variants=("hat_l_x2", "hat_l_x3", "hat_l_x4"),
    load=_load_hat, build_official=_build_hat, official_run=_hat_run, inner=_hat_body, img_size=48, batch=1,
    make_input=lambda v, b, s, g: torch.rand(b, 3, s, s, generator=g),
    save=lambda sd, path, v: _save_torch({"params_ema": sd}, path),
    notes="release format: BasicSR, weights under 'params_ema'; the official model run on the input reflect-padded "
          "to the window and its output cropped, as its test does; 'deep features' rows compare the residual "
          "groups' output (after the last LayerNorm), which the shallow-feature skip dwarfs in the image")


# ECA-Net ------------------------------------------------------------------------------------------
def _build_eca(mod, v):
    if v == "eca_mobilenetv2":
        return mod.eca_mobilenet_v2()  # kernel 1 below 96 channels, 3 from 96 on, as released (k13)
    from vzoo.models.eca import RELEASED_K_SIZE
    return getattr(mod, v)(k_size=list(RELEASED_K_SIZE[v]))  # main.py --ksize of the released file


ECA = Family(
    repo="BangguWu/ECANet", candidates=("models/eca_resnet.py",),
    variants=("eca_resnet18", "eca_resnet34", "eca_resnet50", "eca_resnet101", "eca_resnet152", "eca_mobilenetv2"),
    load=lambda root, rel: import_official(root, "models"), build_official=_build_eca,
    # main.py wraps the model in DataParallel and saves {'epoch', 'arch', 'state_dict', 'best_prec1', 'optimizer'}
    save=lambda sd, path, v: _save_torch({"epoch": 100, "arch": v, "best_prec1": 77.42,
                                          "state_dict": {"module." + k: t for k, t in sd.items()}}, path),
    notes="release format: main.py checkpoint, DataParallel 'module.' keys under 'state_dict'")


# ULSAM --------------------------------------------------------------------------------------------
_ULSAM_CHANNELS = 64


def _load_ulsam(root, rel):
    # ulsam.py calls torch.set_default_tensor_type(torch.cuda.FloatTensor) when imported (it was written
    # for a GPU run); on a CPU that call fails and it would put every later tensor on the GPU. The call
    # changes no arithmetic of the module, so it is skipped while the file is imported.
    return import_official(root, "ulsam", patches=[(torch, "set_default_tensor_type", lambda *a, **k: None)])


def _build_ulsam(mod, v):
    g = int(v.rsplit("_g", 1)[1])
    return mod.ULSAM(_ULSAM_CHANNELS, _ULSAM_CHANNELS, 56, 56, g)


def _ulsam_maps(official, ours, x):
    """ULSAM(x) = x * A + x with A a softmax over all H*W positions (entries ~ 1/(H*W)): the identity term
    dominates the output, so the attention maps themselves are compared too — the official ones as the
    outputs of each subspace's ``softmax`` module (B, 1, H*W), vzoo's from :meth:`ULSAM.attention`."""
    maps = []
    hooks = [sub.softmax.register_forward_hook(lambda m, i, o: maps.append(o)) for sub in official.subspaces]
    try:
        official(x)
    finally:
        for h in hooks:
            h.remove()
    ref = torch.cat(maps, 1).view(x.shape[0], len(maps), *x.shape[2:])
    return [("attention maps", ref, ours.attention(x))]


def _load_vzoo_ulsam(v, path):
    from vzoo.layers.ulsam import ULSAM
    from vzoo.models import load_checkpoint_file
    m = ULSAM(_ULSAM_CHANNELS, int(v.rsplit("_g", 1)[1]))
    m.load_state_dict(load_checkpoint_file(path))  # the module's own loader converts the official layout
    return m


ULSAM = Family(
    repo="Nandan91/ULSAM", candidates=("ulsam.py",),
    variants=("ulsam_g1", "ulsam_g2", "ulsam_g4", "ulsam_g8", "ulsam_g16"),
    load=lambda root, rel: _load_ulsam(root, rel), build_official=_build_ulsam, img_size=56,
    make_input=lambda v, b, s, g: torch.randn(b, _ULSAM_CHANNELS, s, s, generator=g),
    load_vzoo=_load_vzoo_ulsam, save=lambda sd, path, v: _save_torch(sd, path),
    inner=_ulsam_maps,
    notes=f"module only (no released networks or weights): {_ULSAM_CHANNELS} channels, bare state dict; "
          f"'attention maps' rows compare the g softmax maps A, whose term x * A is ~1/(H*W) of the output")


# MOAT (TensorFlow) ---------------------------------------------------------------------------------
def _load_moat(root, rel):
    from vzoo.benchmarks._moat_tf import load_official_moat  # imports TensorFlow (not a vzoo dependency)
    return load_official_moat(root)


def _convert_tf(variant, src, dst):
    """``tools/convert.py moat --src SRC --dst DST --variant VARIANT``, in this process."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("_vzoo_convert_tool", ROOT / "tools" / "convert.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    try:
        tool.main(["moat", "--src", src, "--dst", dst, "--variant", variant])
    except SystemExit as e:  # the tool's refusals: one row's error, not the end of the run
        raise RuntimeError(f"tools/convert.py: {e}") from None


def _moat_round_trip(ns, variant, img_size, batch, seed, workdir):
    from vzoo.benchmarks._moat_tf import run_check
    return run_check(ns, variant, img_size, batch, seed, workdir, convert=_convert_tf)


def _not_torch(*a, **k):
    raise RuntimeError("the MOAT release is TensorFlow: its round trip is Family.round_trip")


MOAT = Family(
    repo="google-research/deeplab2", candidates=("model/pixel_encoder/moat.py",),
    variants=("tiny_moat_0", "tiny_moat_1", "tiny_moat_2", "tiny_moat_3", "moat_0", "moat_1"),
    extra_variants=("moat_2", "moat_3", "moat_4"),
    load=_load_moat, build_official=_not_torch, save=_not_torch, round_trip=_moat_round_trip, img_size=256,
    notes="the official model is TensorFlow (needs TensorFlow, not a vzoo dependency; Keras 3 API shims in "
          "vzoo/benchmarks/_moat_tf.py, no arithmetic changed), built with deeplab2's own config (global "
          "attention, shortcut pool 2, 1000 classes), random weights and BatchNorm moving statistics, saved as "
          "a TF1 name-based checkpoint in the release's layout (with EMA copies and optimizer slots), converted "
          "by tools/convert.py, loaded through timm; rows 'resN endpoint' compare deeplab2's res2..res5 "
          "endpoints with vzoo's forward_intermediates; input NHWC for TF, the same values NCHW for vzoo")


FAMILIES: Dict[str, Family] = {"van": VAN, "favit": FAVIT, "biformer": BIFORMER, "hat": HAT, "eca": ECA,
                               "ulsam": ULSAM, "moat": MOAT}


# ------------------------------------------------------------------------------------------- running
def check_variant(fam: Family, official_ns, variant: str, img_size: int, batch: int, seed: int, tol: float,
                  workdir: str) -> dict:
    """One row: build/randomise/save the official model, load it into vzoo, compare the outputs."""
    row = dict(variant=variant, input=None, max_abs=None, max_rel=None, shape=None, status=None)
    t0 = time.perf_counter()
    try:
        if fam.round_trip is not None:
            x, ref, out, inner = fam.round_trip(official_ns, variant, img_size, batch, seed, workdir)
            row["input"] = "x".join(map(str, x.shape))
            row.update(compare(out, ref))
            row["shape"] = "x".join(map(str, out.shape))
            row["status"] = "ok" if row["max_rel"] < tol else f"MISMATCH (>= {tol:g})"
            for label, ref_t, out_t in inner:
                sub = dict(variant=f"{variant} {label}", input=row["input"], **compare(out_t, ref_t),
                           shape="x".join(map(str, out_t.shape)))
                sub["status"] = "ok" if sub["max_rel"] < tol else f"MISMATCH (>= {tol:g})"
                row.setdefault("inner", []).append(sub)
            row["seconds"] = round(time.perf_counter() - t0, 1)
            return row
        torch.manual_seed(seed)
        official = randomize_(fam.build_official(official_ns, variant), seed).eval()
        path = os.path.join(workdir, f"{variant}.pth")
        fam.save({k: v.detach().clone() for k, v in official.state_dict().items()}, path, variant)
        ours = fam.load_vzoo(variant, path).eval()
        if not type(ours).__module__.startswith(("vzoo.", "timm.")) or type(official) is type(ours):
            raise RuntimeError(f"the model loaded for {variant!r} is {type(ours).__module__}.{type(ours).__name__}, "
                               f"not vzoo's (did the official file register itself with timm?)")
        g = torch.Generator().manual_seed(seed + 1)
        x = (fam.make_input or _image_input)(variant, batch, img_size, g)
        row["input"] = "x".join(map(str, x.shape))
        with torch.inference_mode():
            ref = fam.official_run(official, variant)(x.clone())
            out = ours(x.clone())
        row.update(compare(out, ref))
        row["shape"] = "x".join(map(str, out.shape))
        row["status"] = "ok" if row["max_rel"] < tol else f"MISMATCH (>= {tol:g})"
        if fam.inner is not None:
            with torch.inference_mode():
                inner = fam.inner(official, ours, x.clone())
            for label, ref_t, out_t in inner:
                sub = dict(variant=f"{variant} {label}", input=row["input"], **compare(out_t, ref_t),
                           shape="x".join(map(str, out_t.shape)))
                sub["status"] = "ok" if sub["max_rel"] < tol else f"MISMATCH (>= {tol:g})"
                row.setdefault("inner", []).append(sub)
    except OfficialSourceError:
        raise
    except Exception as e:  # one broken variant must not hide the others' figures
        row["status"] = f"ERROR {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def run(family: str, official_src: str, variants: Optional[Sequence[str]] = None, img_size: Optional[int] = None,
        batch: Optional[int] = None, seed: int = 0, tol: float = DEFAULT_TOL, log=print) -> List[dict]:
    """All rows for ``family`` (raises :class:`OfficialSourceError` for an unusable ``official_src``)."""
    fam = FAMILIES[family]
    root, rel = find_official_file(official_src, fam.candidates, fam.repo)
    variants = list(variants or fam.variants)
    unknown = [v for v in variants if v not in (*fam.variants, *fam.extra_variants)]
    if unknown:
        raise ValueError(f"{family}: unknown variants {unknown}; known: {[*fam.variants, *fam.extra_variants]}")
    try:
        official_ns = fam.load(root, rel)
    except OfficialSourceError:
        raise
    except Exception as e:  # the official file itself failed to import: say which, from where
        raise OfficialSourceError(f"--official-src {official_src!r}: importing the official {rel} failed "
                                  f"({type(e).__name__}: {e})") from e
    rows = []
    with tempfile.TemporaryDirectory(prefix=f"vzoo_parity_{family}_") as workdir:
        for v in variants:
            row = check_variant(fam, official_ns, v, img_size or fam.img_size, batch or fam.batch, seed, tol, workdir)
            for r in [row, *row.pop("inner", [])]:
                r = dict(family=family, **r)
                rows.append(r)
                if log:
                    log(format_row(r))
    return rows


COLUMNS = ("family", "variant", "input", "max_abs", "max_rel", "shape", "status")


def _fmt(v):
    return "-" if v is None else f"{v:.2e}" if isinstance(v, float) else str(v)


def format_row(row: dict) -> str:
    return "  ".join(f"{c}={_fmt(row.get(c))}" for c in COLUMNS)


def markdown_table(rows: List[dict]) -> str:
    cols = ("family", "variant", "input", "max abs err", "max rel err", "output shape", "status")
    keys = ("family", "variant", "input", "max_abs", "max_rel", "shape", "status")
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(" --- " for _ in cols) + "|"]
    lines += ["| " + " | ".join(_fmt(r.get(k)) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def write_markdown(path: Path, family: str, header: str, table: str) -> None:
    """Rewrite ``family``'s block of the parity section of ``path`` (created if missing)."""
    def add(text: str, block: str) -> str:
        title = f"## {SECTION_TITLE}"
        if title not in text:
            text = text.rstrip("\n") + f"\n\n{title}\n\n{_SECTION_INTRO}\n"
        # a new family block goes at the end of the parity section (before the next '## ' heading)
        i = text.index(title) + len(title)
        nxt = text.find("\n## ", i)
        pos = len(text) if nxt < 0 else nxt + 1
        head, tail = text[:pos].rstrip("\n"), text[pos:]
        return head + f"\n\n### {family}\n\n{block}\n" + ("\n" + tail if tail else "")
    write_block(path, f"parity:{family}", f"{header}\n\n{table}", add)


_SECTION_INTRO = (
    "Each row: the official model (imported from a local checkout of its repository, never shipped with vzoo) "
    "with random weights (every parameter off its init, BatchNorm running statistics randomised), saved in the "
    "release's checkpoint format, loaded into vzoo with `timm.create_model(NAME, pretrained=True, "
    "pretrained_cfg_overlay=dict(file=PATH))` (the family's `checkpoint_filter_fn`), both run in eval mode "
    "in fp32 on the CPU on the same seeded batch. max abs err = max|vzoo - official|, max rel err = "
    "max abs err / max|official|; the goal is max rel err < 1e-4 (the tool exits non-zero otherwise); "
    "0.00e+00 means bit-identical outputs (the same operations in the same order).\n\n"
    "Reproduce: `--official-src DIR` is a checkout of the official repository at the commit named in each "
    "block, or a directory holding just the files the tool imports, unchanged (VAN `models/`; FaViT "
    "`FaViT/classification/favit.py`; BiFormer `models/{biformer,biformer_stl,_common}.py` and "
    "`ops/bra_legacy.py`; HAT `hat/archs/hat_arch.py`; ECA-Net `models/`; ULSAM `ulsam.py`), which is what "
    "`/tmp/official/FAMILY` was. The official BiFormer and HAT files need `einops` (0.8.2 here); BasicSR's "
    "registry and fairscale's checkpoint wrapper, which the models do not use, get stand-ins. Each command "
    "below also had `--markdown docs/benchmarks.md`, which wrote its block.")


def _git_head(src: str) -> Optional[str]:
    import subprocess
    try:
        r = subprocess.run(["git", "-C", src, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 and os.path.isdir(os.path.join(src, ".git")) else None


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="tools/parity.py", description=__doc__.split("\n\n")[0])
    p.add_argument("family", nargs="?", choices=sorted(FAMILIES))
    p.add_argument("--list", action="store_true", help="list the families, their repositories and variants")
    p.add_argument("--official-src", help="local checkout of the family's official repository")
    p.add_argument("--variants", nargs="+", help="default: every released variant of the family")
    p.add_argument("--img-size", type=int, help="input side (default: 224; HAT 48 LR pixels; ULSAM 56; MOAT 256)")
    p.add_argument("--batch", type=int, help="batch (default 2; 1 for BiFormer and HAT)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tol", type=float, default=DEFAULT_TOL, help="max relative error allowed (default 1e-4)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--official-rev", help="the official code's revision, for the record (default: the "
                                           "checkout's git HEAD, if it is a git checkout)")
    p.add_argument("--json", type=Path, help="also write the rows as JSON here")
    p.add_argument("--markdown", type=Path, help="rewrite this family's parity block of a Markdown file")
    args = p.parse_args(argv)
    if args.list:
        for name, fam in FAMILIES.items():
            print(f"{name:9s} {fam.repo:45s} {' '.join(fam.variants)}"
                  + (f" (also: {' '.join(fam.extra_variants)})" if fam.extra_variants else ""))
        return 0
    if not args.family:
        p.error("FAMILY is required (or --list)")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        rows = run(args.family, args.official_src, args.variants, args.img_size, args.batch, args.seed, args.tol)
    except (OfficialSourceError, ValueError) as e:
        print(f"tools/parity.py: error: {e}", file=sys.stderr)
        return 2
    failed = [r for r in rows if r["status"] != "ok"]
    command = "python tools/parity.py " + " ".join(
        shlex.quote(a) for a in argv if not a.startswith("--markdown") and a != str(args.markdown))
    header = (f"CPU, fp32 ({platform.processor() or platform.machine()}, torch {torch.__version__}); "
              f"date: {datetime.date.today().isoformat()}; command: `{command}`")
    fam = FAMILIES[args.family]
    rev = args.official_rev or _git_head(args.official_src)
    header += f"\n\nOfficial code: `{fam.repo}`" + (f" at `{rev}`" if rev else "") + f"; {fam.notes}."
    table = markdown_table(rows)
    print(header)
    print(table)
    print(f"{len(rows) - len(failed)}/{len(rows)} variants within max rel err < {args.tol:g}")
    if args.json:
        args.json.write_text(json.dumps(dict(family=args.family, header=header, tol=args.tol,
                                             official_src=os.path.abspath(args.official_src), rows=rows), indent=1))
    if args.markdown:
        write_markdown(args.markdown, args.family, header, table)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

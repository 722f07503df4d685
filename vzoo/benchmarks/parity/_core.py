"""What every parity check does (see :mod:`vzoo.benchmarks.parity`): randomise the official model, save it
in the release's format, load it into vzoo, compare the outputs, and give the rows."""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import nn

from ...utils import markdown_table
from .._official import OfficialSourceError, find_official_file

__all__ = ["Family", "DEFAULT_TOL", "COLUMNS", "randomize_", "compare", "save_torch", "official_and_vzoo",
           "check_variant", "run_family", "format_row", "rows_table"]

DEFAULT_TOL = 1e-4


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


def save_torch(obj, path: str) -> None:
    torch.save(obj, path)


def _timm_loader(name: str, path: str) -> nn.Module:
    import timm

    import vzoo  # noqa: F401  (registers the models)
    return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=path))


def _identity_run(model, variant):
    return model


def _image_input(variant, batch, size, g):
    return torch.randn(batch, 3, size, size, generator=g)


@dataclass
class Family:
    """How one family's official code is found, built, saved and compared (a spec module's ``SPEC``)."""
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
    # the files of a checkout that the check imports (what a directory standing in for a checkout must hold)
    official_files: str = ""
    # a non-PyTorch official model runs its whole round trip itself:
    # (namespace, variant, img_size, batch, seed, workdir) -> (input, official out, vzoo out, inner rows)
    round_trip: Optional[Callable[[object, str, int, int, int, str], tuple]] = None


# ------------------------------------------------------------------------------------------- running
def _status(row: dict, tol: float) -> str:
    return "ok" if row["max_rel"] < tol else f"MISMATCH (>= {tol:g})"


def _dims(t: torch.Tensor) -> str:
    return "x".join(map(str, t.shape))


def _fill(row: dict, x, ref, out, inner, tol: float) -> None:
    """The row's figures for ``out`` vs ``ref``, then one sub-row per ``(label, official, vzoo)`` of ``inner``
    (a list, or a function giving it)."""
    row["input"] = _dims(x)
    row.update(compare(out, ref))
    row["shape"] = _dims(out)
    row["status"] = _status(row, tol)
    for label, ref_t, out_t in (inner() if callable(inner) else inner):
        sub = dict(variant=f"{row['variant']} {label}", input=row["input"], **compare(out_t, ref_t),
                   shape=_dims(out_t))
        sub["status"] = _status(sub, tol)
        row.setdefault("inner", []).append(sub)


def official_and_vzoo(fam: Family, official_ns, variant: str, seed: int, workdir: str):
    """The official PyTorch model with random weights (seeded), saved in the release's format under ``workdir``
    and loaded into vzoo's model through the family's loader: ``(official, vzoo)``, both on the same weights."""
    torch.manual_seed(seed)
    official = randomize_(fam.build_official(official_ns, variant), seed)
    path = os.path.join(workdir, f"{variant}.pth")
    fam.save({k: v.detach().clone() for k, v in official.state_dict().items()}, path, variant)
    ours = fam.load_vzoo(variant, path)
    if not type(ours).__module__.startswith(("vzoo.", "timm.")) or type(official) is type(ours):
        raise RuntimeError(f"the model loaded for {variant!r} is {type(ours).__module__}.{type(ours).__name__}, "
                           f"not vzoo's (did the official file register itself with timm?)")
    return official, ours


def _torch_round_trip(fam: Family, row: dict, official_ns, variant: str, img_size: int, batch: int, seed: int,
                      workdir: str):
    """Build/randomise/save the official PyTorch model, load it into vzoo, run both: (x, ref, out, inner).
    ``row`` gets its input as soon as there is one (an error row then still names it)."""
    official, ours = official_and_vzoo(fam, official_ns, variant, seed, workdir)
    official, ours = official.eval(), ours.eval()
    g = torch.Generator().manual_seed(seed + 1)
    x = (fam.make_input or _image_input)(variant, batch, img_size, g)
    row["input"] = _dims(x)
    with torch.inference_mode():
        ref = fam.official_run(official, variant)(x.clone())
        out = ours(x.clone())

    def inner():  # run once the outputs have been compared
        with torch.inference_mode():
            return fam.inner(official, ours, x.clone()) if fam.inner is not None else []
    return x, ref, out, inner


def check_variant(fam: Family, official_ns, variant: str, img_size: int, batch: int, seed: int, tol: float,
                  workdir: str) -> dict:
    """One row (and its ``inner`` sub-rows): the official model's round trip through vzoo, compared."""
    row = dict(variant=variant, input=None, max_abs=None, max_rel=None, shape=None, status=None)
    t0 = time.perf_counter()
    round_trip = fam.round_trip or (lambda *a: _torch_round_trip(fam, row, *a))
    try:
        x, ref, out, inner = round_trip(official_ns, variant, img_size, batch, seed, workdir)
        _fill(row, x, ref, out, inner, tol)
    except OfficialSourceError:
        raise
    except Exception as e:  # one broken variant must not hide the others' figures
        row["status"] = f"ERROR {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def run_family(name: str, fam: Family, official_src: str, variants: Optional[Sequence[str]] = None,
               img_size: Optional[int] = None, batch: Optional[int] = None, seed: int = 0, tol: float = DEFAULT_TOL,
               log=print) -> List[dict]:
    """All rows for the family ``name`` (raises :class:`OfficialSourceError` for an unusable ``official_src``)."""
    root, rel = find_official_file(official_src, fam.candidates, fam.repo)
    variants = list(variants or fam.variants)
    unknown = [v for v in variants if v not in (*fam.variants, *fam.extra_variants)]
    if unknown:
        raise ValueError(f"{name}: unknown variants {unknown}; known: {[*fam.variants, *fam.extra_variants]}")
    try:
        official_ns = fam.load(root, rel)
    except OfficialSourceError:
        raise
    except Exception as e:  # the official file itself failed to import: say which, from where
        raise OfficialSourceError(f"--official-src {official_src!r}: importing the official {rel} failed "
                                  f"({type(e).__name__}: {e})") from e
    rows = []
    with tempfile.TemporaryDirectory(prefix=f"vzoo_parity_{name}_") as workdir:
        for v in variants:
            row = check_variant(fam, official_ns, v, img_size or fam.img_size, batch or fam.batch, seed, tol, workdir)
            for r in [row, *row.pop("inner", [])]:
                r = dict(family=name, **r)
                rows.append(r)
                if log:
                    log(format_row(r))
    return rows


# -------------------------------------------------------------------------------------------- output
COLUMNS = dict(family="family", variant="variant", input="input", max_abs="max abs err", max_rel="max rel err",
               shape="output shape", status="status")


def _fmt(v):
    return "-" if v is None else f"{v:.2e}" if isinstance(v, float) else str(v)


def format_row(row: dict) -> str:
    return "  ".join(f"{c}={_fmt(row.get(c))}" for c in COLUMNS)


def rows_table(rows: List[dict]) -> str:
    return markdown_table(rows, columns=COLUMNS, fmt=_fmt)

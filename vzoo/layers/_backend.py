"""One backend chooser for every attention op (NATTEN's rule).

Each op family lists its backends in :class:`OpBackends`: per backend a ``can_run_<backend>(**problem)``
check that returns why the backend cannot run the problem (``None`` when it can), and the order in which
the automatic choice tries them on CUDA tensors and elsewhere. :func:`choose_backend` applies the rule:
an explicitly requested backend that cannot run raises ``ValueError`` with the reason; only ``None`` /
``'auto'`` falls back to the next backend that can.

A problem is described by keyword arguments: ``device`` always, plus what a family's checks read
(``dtype``, ``spatial_dims``, ``has_rpb``, ``soft_routing``, ``attn_dropout``); checks ignore the rest.
"""
from __future__ import annotations

import importlib.util
from typing import Callable, Dict, NamedTuple, Optional, Tuple

import torch

from vzoo.kernels import bra as _bra_kernels
from vzoo.kernels import na as _na_kernels
from vzoo.kernels import na_split as _na_split_kernels
from vzoo.kernels import sparse_attention as _sparse_kernels

__all__ = ["OpBackends", "NA_BACKENDS", "NA_SPLIT_BACKENDS", "ROUTING_BACKENDS", "SPARSE_BACKENDS", "WINDOW_BACKENDS",
           "check_backend_name", "choose_backend"]

AUTO = "auto"


class OpBackends(NamedTuple):
    """The backends of one op family: ``checks`` maps each name (in the order the docs list them) to its
    ``can_run`` check; ``auto_cuda`` / ``auto_other`` are the automatic choice's preference orders."""
    checks: Dict[str, Callable[..., Optional[str]]]
    auto_cuda: Tuple[str, ...]
    auto_other: Tuple[str, ...]

    @property
    def names(self) -> Tuple[str, ...]:
        return tuple(self.checks)


# ---------------------------------------------------------------------------------------------------
# can_run_<backend>(**problem): None when the backend can run the problem, else the reason it cannot
# ---------------------------------------------------------------------------------------------------
def can_run_torch(**problem) -> Optional[str]:
    """The PyTorch paths (``torch``, and ``reference`` where a family has one): any device, any float dtype."""
    return None


def can_run_na_triton(*, device: torch.device, dtype: torch.dtype, spatial_dims: int, **problem) -> Optional[str]:
    return _na_kernels.cannot_run(device=device, dtype=dtype, spatial_dims=spatial_dims)


def can_run_na_split_triton(*, device: torch.device, dtype: torch.dtype, spatial_dims: int, has_rpb: bool,
                            **problem) -> Optional[str]:
    return _na_split_kernels.cannot_run(device=device, dtype=dtype, spatial_dims=spatial_dims, has_rpb=has_rpb)


def can_run_natten(*, has_rpb: bool, **problem) -> Optional[str]:
    if has_rpb:
        return "natten has no relative positional bias (natten >= 0.20 removed it); use backend='torch' or 'triton'"
    if importlib.util.find_spec("natten") is None:
        return "it needs the natten package (pip install natten)"
    return None


def can_run_bra_triton(*, device: torch.device, dtype: torch.dtype, soft_routing: bool, **problem) -> Optional[str]:
    return _bra_kernels.cannot_run(device=device, dtype=dtype, soft_routing=soft_routing)


def can_run_sparse_triton(*, device: torch.device, dtype: torch.dtype, **problem) -> Optional[str]:
    return _sparse_kernels.cannot_run(device=device, dtype=dtype)


def can_run_na2d_window(*, attn_dropout: float, **problem) -> Optional[str]:
    """Window attention through :func:`vzoo.layers.na2d` (kernel = stride = window)."""
    if attn_dropout > 0:
        return f"na2d has no attention dropout (attn_drop {attn_dropout} in training)"
    return None


NA_BACKENDS = OpBackends(
    checks={"triton": can_run_na_triton, "torch": can_run_torch, "natten": can_run_natten},
    auto_cuda=("triton", "torch"), auto_other=("torch",))
# the split ops na*d_qk / na*d_av (natten >= 0.20 has none to compare with)
NA_SPLIT_BACKENDS = OpBackends(
    checks={"triton": can_run_na_split_triton, "torch": can_run_torch},
    auto_cuda=("triton", "torch"), auto_other=("torch",))
ROUTING_BACKENDS = OpBackends(
    checks={"triton": can_run_bra_triton, "torch": can_run_torch, "reference": can_run_torch},
    auto_cuda=("triton", "torch"), auto_other=("torch",))
# sparse attention over per-query key sets (Sparsifiner); 'reference' is the release's masked dense attention
SPARSE_BACKENDS = OpBackends(
    checks={"triton": can_run_sparse_triton, "torch": can_run_torch, "reference": can_run_torch},
    auto_cuda=("triton", "torch"), auto_other=("torch",))
# window attention (HAT): on the CPU the na2d torch path measured no faster than SDPA (64x64 map, 180
# channels, 6 heads, window 16: 0.45 s vs 0.41 s on a shared 2-core CPU), so 'auto' keeps the reference there
WINDOW_BACKENDS = OpBackends(
    checks={"reference": can_run_torch, "na2d": can_run_na2d_window},
    auto_cuda=("na2d", "reference"), auto_other=("reference",))


# ---------------------------------------------------------------------------------------------------
# the chooser
# ---------------------------------------------------------------------------------------------------
def check_backend_name(op_name: str, requested: Optional[str], backends: OpBackends) -> None:
    """Raise ``ValueError`` unless ``requested`` is one of the family's backends, ``'auto'`` or None."""
    if requested is not None and requested != AUTO and requested not in backends.checks:
        raise ValueError(f"{op_name}: backend must be one of {backends.names}, 'auto' or None, got {requested!r}")


def choose_backend(op_name: str, requested: Optional[str], backends: OpBackends, **problem) -> str:
    """The backend that runs ``problem`` (keyword arguments, ``device`` among them) for ``op_name``.

    ``requested`` None or ``'auto'``: the first of the family's automatic order for the device that can
    run it. A named backend: that one, or ``ValueError`` naming the op, the backend, why it cannot run
    and the allowed values.
    """
    check_backend_name(op_name, requested, backends)
    if requested is not None and requested != AUTO:
        reason = backends.checks[requested](**problem)
        if reason is not None:
            raise ValueError(f"{op_name}: backend={requested!r} cannot run here: {reason}. Allowed: "
                             f"{backends.names}, or None / 'auto' to choose automatically")
        return requested
    order = backends.auto_cuda if problem["device"].type == "cuda" else backends.auto_other
    reasons = []
    for name in order:
        reason = backends.checks[name](**problem)
        if reason is None:
            return name
        reasons.append(f"{name}: {reason}")
    raise ValueError(f"{op_name}: no backend can run this problem ({'; '.join(reasons)})")

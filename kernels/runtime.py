"""Where the Triton kernels can run, and the launch helpers every kernel family shares.

Importing this module never imports triton: :func:`triton_module` does, on its first call.
"""
from __future__ import annotations

import functools
import os
from typing import Optional

import torch

__all__ = ["KERNEL_DTYPES", "LOG2E", "triton_module", "triton_importable", "interpreting", "autotuning",
           "cannot_run_triton", "require", "pow2_block", "cdiv", "empty_out_lse", "empty_contiguous"]

KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
LOG2E = 1.4426950408889634  # the kernels keep their softmax in the exp2 domain


@functools.lru_cache(maxsize=1)
def triton_module():
    """The ``triton`` package, or None where it does not import."""
    try:
        import triton
        import triton.language  # noqa: F401
    except Exception:  # pragma: no cover - triton ships with torch's CUDA wheels
        return None
    return triton


@torch.compiler.assume_constant_result  # torch.compile runs it once instead of tracing the cached import
def triton_importable() -> bool:
    """Whether the ``triton`` package imports."""
    return triton_module() is not None


def interpreting() -> bool:
    """``TRITON_INTERPRET=1``: the kernels run on the CPU through triton's interpreter (for tests; it must
    be set before triton is first imported)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def autotuning(env_var: str) -> bool:
    """Autotune tile shapes unless under the interpreter or ``env_var=0`` (then: one default config)."""
    return not interpreting() and os.environ.get(env_var, "1") != "0"


def cannot_run_triton(device: torch.device, dtype: torch.dtype) -> Optional[str]:
    """Why the kernels cannot run on tensors of this device and dtype; None when they can."""
    if dtype not in KERNEL_DTYPES:
        return f"the kernels support float16, bfloat16 and float32, got {dtype}"
    if not triton_importable():
        return "the triton package is not importable"
    if device.type != "cuda" and not interpreting():
        return (f"the kernels need CUDA tensors (or TRITON_INTERPRET=1, set before triton is imported, to "
                f"test them on the CPU), got tensors on {device}")
    return None


def require(op_name: str, reason: Optional[str]) -> None:
    """Raise the ``ValueError`` of a kernel entry point called where it cannot run."""
    if reason is not None:
        raise ValueError(f"{op_name}: backend='triton' cannot run: {reason}; use backend='torch'")


def pow2_block(size: int, minimum: int = 16) -> int:
    """The power-of-two block (at least ``minimum``) that holds ``size`` channels or tokens."""
    return max(minimum, 1 << (int(size) - 1).bit_length())


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def empty_out_lse(q: torch.Tensor, v: torch.Tensor):
    """Uninitialised attention output ``q.shape[:-1] + (Dv,)`` in q's dtype and its float32 log-sum-exp
    ``q.shape[:-1]`` (channels last): what a forward allocates, and the fake tensors of its custom op."""
    return q.new_empty(q.shape[:-1] + v.shape[-1:]), q.new_empty(q.shape[:-1], dtype=torch.float32)


def empty_contiguous(*tensors: torch.Tensor):
    """Uninitialised contiguous tensors shaped like ``tensors`` (gradients; also the fake tensors of a backward)."""
    return tuple(t.new_empty(t.shape) for t in tensors)

"""Fused neighborhood-attention kernels (Triton): placeholder until the kernels land."""
from __future__ import annotations


def triton_available() -> bool:
    return False


def na_triton(*args, **kwargs):
    raise RuntimeError("na2d: backend='triton' is not available yet; use backend='torch'")

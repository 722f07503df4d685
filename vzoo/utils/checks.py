"""Argument checks whose error names the owner, the argument and the allowed values."""
from __future__ import annotations

__all__ = ["check_int"]


def check_int(owner: str, name: str, value, minimum: int) -> None:
    """Raise ``ValueError("{owner}: {name} must be an int >= {minimum}, got {value!r}")`` unless ``value`` is an
    int of at least ``minimum``."""
    if not isinstance(value, int) or value < minimum:
        raise ValueError(f"{owner}: {name} must be an int >= {minimum}, got {value!r}")

"""Shared building blocks and attention ops.

Every module here whose name does not start with ``_`` is imported and its ``__all__`` is
re-exported, so ``from vzoo.layers import na2d`` works as soon as the module defining it exists.
Modules must keep their import cheap (no Triton import at module level: kernels load lazily).
"""
import importlib as _importlib
import pkgutil as _pkgutil

__all__ = []
for _m in sorted(m.name for m in _pkgutil.iter_modules(__path__) if not m.name.startswith("_")):
    _mod = _importlib.import_module(f"{__name__}.{_m}")
    for _sym in getattr(_mod, "__all__", ()):
        globals()[_sym] = getattr(_mod, _sym)
        __all__.append(_sym)

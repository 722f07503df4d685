"""Importing a family's official reference code from a checkout the user names (``--official-src``).

vzoo ships no official code. Parity checks (``tools/parity.py``) and benchmarks that compare against
the official implementation import the official model file from a local checkout of its repository,
by path, with three precautions that are the same for every family:

* the checkout's root goes on ``sys.path`` only while the file is imported (the releases import
  their siblings as top-level packages: ``from ops.bra_legacy import ...``, ``from .eca_module ...``),
  and the modules imported from it are dropped from ``sys.modules`` afterwards, so two checkouts
  that both have a ``models`` package do not shadow each other;
* timm's ``register_model`` is a no-op meanwhile: the official files register the very names vzoo
  registers (``van_b0``, ``biformer_tiny``, ...) and timm would otherwise overwrite vzoo's entries;
* packages that an official file imports but its model does not need (a registry decorator, a
  gradient-checkpointing wrapper) can be given *stand-ins*, used only when the real package is not
  importable. Every caller says next to each stand-in why the model does not depend on it.

Errors are :class:`OfficialSourceError` (a ``ValueError``) and name ``--official-src``.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.machinery
import importlib.util
import os
import sys
import types
import warnings
from typing import Callable, Dict, Iterable, Iterator, Optional, Sequence, Tuple

__all__ = ["OfficialSourceError", "find_official_file", "checkout_in", "stand_in", "official_imports",
           "import_official"]


class OfficialSourceError(ValueError):
    """The ``--official-src`` directory does not hold what the check needs."""


def find_official_file(src: Optional[str], candidates: Sequence[str], repo: str) -> Tuple[str, str]:
    """The first of ``candidates`` (paths relative to a checkout of ``repo``) found under ``src``,
    as ``(root, relpath)`` with ``root`` the directory that ``relpath`` is relative to.

    A candidate may sit deeper in the repository than the import root: ``FaViT/classification/favit.py``
    is imported as ``favit`` from ``SRC/FaViT/classification``; callers pass the candidates with that
    split marked by ``'//'`` (``'FaViT/classification//favit.py'``)."""
    if not src:
        raise OfficialSourceError(f"--official-src is required: a local checkout of {repo}")
    if not os.path.isdir(src):
        raise OfficialSourceError(f"--official-src {src!r} is not a directory (a local checkout of {repo})")
    for cand in candidates:
        prefix, _, rel = cand.rpartition("//")
        root = os.path.join(src, prefix) if prefix else src
        if os.path.isfile(os.path.join(root, rel)):
            return os.path.abspath(root), rel
    shown = [c.replace("//", "/") for c in candidates]
    raise OfficialSourceError(f"--official-src {src!r}: found none of {shown} there (a checkout of {repo}?)")


def checkout_in(root: Optional[str], repo: str) -> Optional[str]:
    """The checkout of ``repo`` (``owner/name``) inside ``root``, a directory of checkouts: ``ROOT/name`` (a plain
    ``git clone``) or ``ROOT/owner+name``; ``None`` if ``root`` is unset or holds neither."""
    if not root:
        return None
    owner, name = repo.split("/")
    for sub in (name, f"{owner}+{name}"):
        if os.path.isdir(os.path.join(root, sub)):
            return os.path.join(root, sub)
    return None


def stand_in(name: str, **attrs) -> types.ModuleType:
    """A module object named ``name`` holding ``attrs`` (with a spec, so ``importlib.util.find_spec``
    and ``importlib.import_module`` accept it once it is in ``sys.modules``)."""
    mod = types.ModuleType(name)
    mod.__spec__ = importlib.machinery.ModuleSpec(name, None)
    mod.__dict__.update(attrs)
    return mod


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _timm_registries():
    mods = []
    for name in ("timm.models", "timm.models._registry", "timm.models.registry"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # timm.models.registry is a deprecated alias
            try:
                mods.append(importlib.import_module(name))
            except ImportError:
                pass
    return mods


@contextlib.contextmanager
def official_imports(root: str, stand_ins: Optional[Dict[str, Callable[[], types.ModuleType]]] = None,
                     patches: Iterable[Tuple[object, str, object]] = ()) -> Iterator[None]:
    """Context in which official files under ``root`` can be imported (see the module docstring).

    ``stand_ins`` maps a module name to a factory of its stand-in, installed only if the real module is
    not importable; ``patches`` are ``(object, attribute, value)`` set for the duration."""
    root = os.path.abspath(root)
    before = set(sys.modules)
    installed = []
    for name, factory in (stand_ins or {}).items():
        if name not in sys.modules and not _importable(name):
            sys.modules[name] = factory()
            installed.append(name)
    saved = []
    for mod in _timm_registries():
        if hasattr(mod, "register_model"):
            saved.append((mod, "register_model", mod.register_model))
            mod.register_model = lambda fn=None, *a, **k: fn  # keep the official entry points out of timm
    for obj, attr, value in patches:
        saved.append((obj, attr, getattr(obj, attr)))
        setattr(obj, attr, value)
    sys.path.insert(0, root)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # deprecated timm import paths in the releases
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        sys.path.remove(root)
        for obj, attr, value in reversed(saved):
            setattr(obj, attr, value)
        for name in set(sys.modules) - before:
            f = getattr(sys.modules[name], "__file__", None) or ""
            if name in installed or os.path.abspath(f).startswith(root + os.sep) or \
                    any(os.path.abspath(p).startswith(root + os.sep)
                        for p in getattr(sys.modules[name], "__path__", None) or ()):
                del sys.modules[name]


def import_official(root: str, module: str, requires: Sequence[str] = (), **kwargs) -> types.ModuleType:
    """Import ``module`` (dotted, relative to ``root``) inside :func:`official_imports` and return it.

    ``requires`` are third-party modules the official file needs for real (e.g. ``einops``): their
    absence is reported as an :class:`OfficialSourceError` naming them, not as an error inside the file."""
    missing = [m for m in requires if not _importable(m)]
    if missing:
        raise OfficialSourceError(
            f"--official-src: the official {module.replace('.', '/')}.py needs {missing}, which "
            f"{'is' if len(missing) == 1 else 'are'} not importable here (pip install {' '.join(missing)})")
    with official_imports(root, **kwargs):
        return importlib.import_module(module)

"""What mmengine needs for the tasks vzoo trains itself (classification, restoration).

Importing this package imports :mod:`vzoo.tasks.registry` (the ``'vzoo'`` registry scope) and then
every task subpackage, so their ``@MODELS.register_module()`` etc. run. A new task joins by adding
its subpackage; this file need not change. ``import vzoo`` does not import this package (it pulls
in mmengine); mmengine imports it through the registries' ``locations`` when a config uses
``default_scope = 'vzoo'``.
"""
import importlib as _importlib
import pkgutil as _pkgutil

from . import registry  # noqa: F401

TASK_PACKAGES = tuple(sorted(
    m.name for m in _pkgutil.iter_modules(__path__) if m.ispkg and not m.name.startswith("_")))
for _name in TASK_PACKAGES:
    _importlib.import_module(f"{__name__}.{_name}")

"""vzoo's model families, one module each. Importing this package registers them with timm.

Every module in this package whose name does not start with ``_`` is a family file and is
imported here, so a new family joins by adding its file (timm's ``@register_model`` runs at
import).
"""
import importlib as _importlib
import pkgutil as _pkgutil

from ._builder import (  # noqa: F401
    CheckpointError, build_vzoo_model, check_state_dict, list_vzoo_models, load_checkpoint_file,
    model_family, unwrap_state_dict,
)

FAMILY_MODULES = tuple(sorted(
    m.name for m in _pkgutil.iter_modules(__path__) if not m.name.startswith("_")))
for _name in FAMILY_MODULES:
    _importlib.import_module(f"{__name__}.{_name}")

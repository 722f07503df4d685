"""The ``'vzoo'`` mmengine registry scope (a config's ``default_scope = 'vzoo'``).

mmengine imports ``<default_scope>.registry`` when a registry is first searched under a scope, so
this module is how a config with ``default_scope = 'vzoo'`` finds vzoo's classes without
``custom_imports``. It re-exports :mod:`vzoo.tasks.registry`; importing it imports ``vzoo.tasks``
(and so every task's registered classes). ``import vzoo`` alone does not import mmengine.
"""
from .tasks.registry import *  # noqa: F401,F403
from .tasks.registry import __all__  # noqa: F401

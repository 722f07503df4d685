"""Small helpers every part of vzoo (and its tools) shares: atomic file writes, argument checks, Markdown tables
and blocks.

Nothing here imports torch, timm or mmengine.
"""
from .checks import check_int  # noqa: F401
from .io import atomic_write, atomic_write_text  # noqa: F401
from .markdown import markdown_table, write_block  # noqa: F401

"""Cached index tables: one decorator for every builder of tables that depend on Python arguments only."""
import functools

import torch

__all__ = ["constant_table"]


def constant_table(maxsize: int):
    """Decorator for the table builders, functions of hashable Python arguments: an ``lru_cache``, built
    outside inference mode (autograd may use the tables whatever mode first built them), and a constant
    under torch.compile (``torch.compiler.assume_constant_result``: called once per trace, its result taken
    as constants, instead of tracing a construction that reads tensor values: a graph break). The marked
    function is a plain one calling the cache: dynamo looks through an ``lru_cache`` wrapper (and warns)."""
    def decorate(fn):
        cached = functools.lru_cache(maxsize=maxsize)(torch.inference_mode(False)(fn))

        @torch.compiler.assume_constant_result
        @functools.wraps(fn)
        def constant(*args, **kwargs):
            return cached(*args, **kwargs)
        constant.cache_clear, constant.cache_info = cached.cache_clear, cached.cache_info
        return constant
    return decorate

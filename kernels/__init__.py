"""Triton kernels of vzoo (importable as ``vzoo.kernels``)."""

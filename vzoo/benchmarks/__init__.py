"""Benchmark suites for ``tools/benchmark.py``.

A suite is a module ``vzoo/benchmarks/<suite>.py`` (name not starting with ``_``) that defines

* ``DESCRIPTION: str`` — one line for ``tools/benchmark.py --help``;
* ``add_arguments(parser)`` — its own command-line options;
* ``run(args) -> list[dict]`` — one dict per measured case; the dispatcher prints them as one
  comparison table (and writes JSON / Markdown when asked).

Timing and memory go through :func:`vzoo.benchmarks._timing.measure`, so every suite reports the
same statistics. Speed goals are checked here, by a person reading the table, never by unit tests.
"""
import importlib
import pkgutil

__all__ = ["list_suites", "load_suite"]


def list_suites():
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def load_suite(name: str):
    suites = list_suites()
    if name not in suites:
        raise ValueError(f"benchmark suite {name!r} is unknown; choose one of {suites}")
    return importlib.import_module(f"{__name__}.{name}")

"""lt_bench: a pluggable benchmark framework for loss re-weighting in long-tailed classification.

The exports below load on first use, so that commands which need no torch (the leaderboard,
the UI) start quickly.
"""

import time

from lt_bench.errors import LtBenchError
from lt_bench.hookspec import hookimpl

#: when this process imported lt_bench: a store that does not answer at start-up is reported
#: within tracking.timeout_s of the command's start, imports included (tracking.http_budget)
STARTED = time.monotonic()

__version__ = "0.1.0"

_LAZY = {"build_method": "lt_bench.api", "build_loss": "lt_bench.api",
         "method_options": "lt_bench.api", "Method": "lt_bench.method"}

__all__ = ["LtBenchError", "Method", "build_loss", "build_method", "hookimpl", "method_options",
           "__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lt_bench' has no attribute {name!r}")

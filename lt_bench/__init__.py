"""lt_bench: a pluggable benchmark framework for loss re-weighting in long-tailed classification."""

from lt_bench.api import build_loss, build_method, method_options
from lt_bench.errors import LtBenchError
from lt_bench.hookspec import hookimpl
from lt_bench.method import Method

__version__ = "0.1.0"

__all__ = ["LtBenchError", "Method", "build_loss", "build_method", "hookimpl", "method_options",
           "__version__"]

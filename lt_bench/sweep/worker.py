"""One worker process of a sweep: ``MODULE:FUNCTION KWARGS [config.yaml] key=value ...``.

It loads the run's config, calls the function (``lt_bench.run.train.train``, or
``lt_bench.run.train.train_trunk`` for a trunk) and prints the run's summary on one line for the Ray
driver. Started by ``lt_bench.sweep.workers``; run as ``__main__``.
"""

from __future__ import annotations

import json
import sys

from lt_bench.config import load_config, split_args
from lt_bench.errors import LtBenchError
from lt_bench.workspace.ownership import RunOwned

#: a worker's exit code when another live process owns its run
BUSY = 3
#: how a worker hands its run's summary to the Ray driver, which may not see its run folder
RESULT_LINE = "LT_BENCH_RESULT "


def main(argv: list[str]) -> int:
    """``MODULE:FUNCTION [config.yaml] key=value ...``: load the config and call
    ``FUNCTION(cfg)`` (``lt_bench.run.train:train`` by default) in this process."""
    import importlib

    target, kwargs, *args = argv
    module, _, name = target.partition(":")
    fn = getattr(importlib.import_module(module), name)
    paths, overrides = split_args(args)

    try:
        result = fn(load_config(paths, overrides), **json.loads(kwargs))
    except RunOwned as exc:  # another sweep trains this run: not a failure of this one
        print(f"lt-bench: {exc}", flush=True)
        return BUSY
    if result is not None:  # a trunk has no record of its own
        print(RESULT_LINE + json.dumps(result.summary(), default=str), flush=True)
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main(sys.argv[1:]))
    except LtBenchError as exc:
        print(f"lt-bench: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM from a dying sweep: the run is recorded KILLED
        print("lt-bench: interrupted", file=sys.stderr)
        raise SystemExit(130) from None

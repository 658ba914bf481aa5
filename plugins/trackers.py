"""The built-in tracker that keeps only the run folder."""

import lt_bench
from lt_bench.tracking.base import local_tracker


@lt_bench.hookimpl
def lt_bench_register_trackers(register):
    register("local", local_tracker)

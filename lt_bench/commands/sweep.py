"""``lt-bench sweep``: a grid of runs (methods × seeds × any listed key), then the leaderboard."""

from __future__ import annotations


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "sweep", help="run a grid of methods × seeds × settings, then print the leaderboard",
        description="Expand list-valued arguments into a grid and train every point: "
                    "methods=[ce,dv] (each becomes method=NAME), seeds=3 (seeds 0,1,2) or "
                    "seeds=[0,5], and any config key given a list, e.g. imbalance=[100,200]. "
                    "jobs=N runs N local worker processes; engine=ray runs each run as a Ray "
                    "task (ray.address=HOST:PORT, gpus_per_run=0.25, cpus_per_run=1) logging to "
                    "a shared tracking server (tracking.uri=http://...). Runs already FINISHED "
                    "in the tracking store are skipped, so an interrupted sweep resumes when "
                    "started again. Runs that differ only in the method share their first "
                    "epochs (plain cross-entropy until the re-weighting start): that trunk is "
                    "trained once per seed and every method starts from it (fork=false turns "
                    "it off). A run another sweep is training is skipped, not trained twice. "
                    "Prints one line per finished run and, at the end, the leaderboard "
                    "(baseline=ce, metric=final|best).",
        epilog="example: lt-bench sweep dataset=cifar10_lt imbalance=[100,200] "
               "methods=[ce,dv] seeds=3 jobs=2 tracking.tracker=mlflow",
    )
    parser.add_argument("args", nargs="*", metavar="CONFIG.yaml|KEY=VALUE")
    parser.set_defaults(func=run)


def run(args) -> int:
    from lt_bench.sweep.runner import run_sweep

    summary = run_sweep(args.args, plugins=getattr(args, "plugin", []) or [])
    return 1 if summary["failed"] else 0

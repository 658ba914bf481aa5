"""``lt-bench sweep``: a grid of runs (methods × seeds × any listed key), then the leaderboard."""

from __future__ import annotations

from typing import Any


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
    summary = run_sweep(args.args, plugins=getattr(args, "plugin", []) or [])
    return 1 if summary["failed"] else 0


def run_sweep(args: list[str], plugins: list[str] = (), out=print, train_fn=None) -> dict:
    """The grid (``lt_bench.sweep.runner.run_grid``), then its leaderboard, picture and links;
    ``train_fn``: what each worker calls (default ``lt_bench.run.train.train``)."""
    # here, not at the top: it imports omegaconf and torch
    from lt_bench.sweep.runner import run_grid

    return run_grid(args, plugins, out, train_fn, close=close)


def close(sweep: Any, report: Any) -> None:
    """The sweep's leaderboard, its comparison picture and the links to its runs."""
    from lt_bench.compare import leaderboard as lb  # here: `lt-bench --help` stays light

    rows = lb.sweep_rows([j.cfg for j in sweep.jobs], sweep.options["metric"],
                         str(sweep.options["baseline"]))
    if rows is not None:  # None: a tracker that cannot be read back, said by finished_in_store
        report.out("")
        report.out(lb.format_text(rows))
        report.summary["leaderboard"] = lb.as_dicts(rows)
    if rows:
        # here, not at the top: it imports omegaconf
        from lt_bench.compare.plot import sweep_figures

        try:
            report.summary["plots"] = [str(p) for p in sweep_figures(
                [j.cfg for j in sweep.jobs], rows, report.out)]
        except Exception as exc:  # a picture must not fail a sweep whose runs are all done
            report.out(f"sweep: the comparison plot could not be drawn ({exc}); "
                       "lt-bench leaderboard --plot FILE.png draws it again")
    # here, not at the top: it imports omegaconf
    from lt_bench.tracking.mlflow_artifacts import sweep_links

    for line in sweep_links([j.cfg for j in sweep.jobs]):  # the runs and the picture, a click away
        report.out(f"sweep: {line}")



"""``lt-bench reproduce STUDY``: a paper's table trained and set cell by cell beside the paper's."""

from __future__ import annotations

import sys
from pathlib import Path

from lt_bench.errors import LtBenchError
from lt_bench.registry import get_registry
from lt_bench.workspace.files import write_file


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "reproduce", help="train a published table (a study) and set each cell beside the paper's",
        description="A study (configs/study/NAME.yaml, or a path) is a paper's table: its rows "
                    "(methods and options), columns (data set, imbalance), the paper's stated "
                    "set-up, cells and claims. This command prints where the runs' config "
                    "departs from the paper's set-up, trains or resumes every run through the "
                    "sweep (shared trunks, workers, progress with ETA; finished runs are "
                    "skipped, so Ctrl-C and the same command again resumes), then prints the "
                    "table: ours (mean ± std over seeds, the paper's statistic and the other "
                    "epoch) beside the paper's, the difference with Welch's 95 %% interval and a "
                    "verdict per cell, and each claim checked with a one-sided Welch test. It "
                    "writes STUDY.md and STUDY.png under WORKSPACE/studies/STUDY/ and logs them "
                    "to MLflow. KEY=VALUE arguments reach every run and the sweep (seeds=5, "
                    "jobs=2, protocol=short_cifar, data.root=DIR, workspace=DIR).",
        epilog="example: lt-bench reproduce zheng_ng_table1_if100 data.root=../shared/data "
               "seeds=3",
    )
    parser.add_argument("study", nargs="?", help="a shipped study's name or a study YAML file "
                                                 "(none: list the shipped studies)")
    parser.add_argument("args", nargs="*", metavar="CONFIG.yaml|KEY=VALUE")
    parser.add_argument("--column", action="append", default=[], metavar="LABEL",
                        help="only this column of the table (repeatable), e.g. "
                             "--column 'CIFAR-10 IF 100'")
    parser.add_argument("--row", action="append", default=[], metavar="LABEL",
                        help="only this row of the table (repeatable), e.g. --row DV")
    parser.add_argument("--all-cells", action="store_true",
                        help="also train the cells the paper leaves empty ('-')")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: report the runs already finished")
    parser.add_argument("--against", action="append", default=[], metavar="KEY=VALUE",
                        help="also report the runs finished under this change (repeatable; "
                             "never trained by this command) beside this setting's, paired by "
                             "seed, e.g. --against data.copy=jpeg: the JPEG export against "
                             "lossless pixels")
    parser.add_argument("--out", metavar="DIR",
                        help="where STUDY.md and STUDY.png go (default: WORKSPACE/studies/STUDY)")
    parser.set_defaults(func=run)


def run(args) -> int:
    # here, not at the top: it imports omegaconf
    from lt_bench.compare.study import grid, load_study, select, setup_diff, study_choices

    if not args.study:
        print("shipped studies: " + (", ".join(study_choices()) or "none"))
        print("run one: lt-bench reproduce NAME [KEY=VALUE ...]")
        return 0
    study = select(load_study(args.study), args.column, args.row)
    check_names(study, getattr(args, "plugin", []) or [])
    cells = grid(study, args.args, out=print, all_cells=args.all_cells)
    jobs = cells.sweep.jobs
    seeds = len({j.seed for j in jobs})
    first = jobs[0].cfg
    lines, same = setup_diff(study, first, seeds)
    print(f"reproduce: {study.title}: {len(study.rows)} rows x {len(study.columns)} columns x "
          f"{seeds} seeds = {len(jobs)} runs, protocol {first.protocol.name}")
    if study.setup:
        print(f"set-up: {same} of {len(study.setup)} items the paper states are as it states")
    for line in lines:
        print(f"set-up: {line}")
    summary = {"failed": []}
    if not args.report_only:
        # here, not at the top: it imports omegaconf and torch
        from lt_bench.sweep.runner import execute

        cells.sweep.plugins = list(getattr(args, "plugin", []) or [])
        summary = execute(cells.sweep, print)
    code = _report(study, cells, lines, first, args.out)
    if args.against:
        _against(study, cells, args, first)
    return code or (1 if summary["failed"] else 0)


def _output_folder(cfg, study, out_dir) -> tuple[Path, Path]:
    """(the report's folder, the folder above which links are the user's): the workspace's
    studies/NAME, whose every part below the workspace must be a real folder, or --out as
    typed."""
    if out_dir:
        folder = Path(out_dir).expanduser()
        return folder, folder
    workspace = Path(cfg.workspace).expanduser()
    return workspace / "studies" / study.name, workspace


def _against(study, cells, args, cfg) -> None:
    """This setting's cells beside those of the same runs under ``--against`` (paired by
    seed), printed and written to STUDY-against.md beside the study's report."""
    from omegaconf import OmegaConf

    # here, not at the top: it imports omegaconf
    from lt_bench.compare.pair import format_pairs, pair_cells
    from lt_bench.compare.study import grid  # here, not at the top: it imports omegaconf
    from lt_bench.compare.verdict import collect  # here, not at the top: it imports omegaconf

    bad = [a for a in args.against if "=" not in a]
    if bad:
        raise LtBenchError(f"--against {bad[0]!r}: give KEY=VALUE, e.g. --against data.copy=jpeg")
    other = grid(study, [*args.args, *args.against], out=lambda line: None,
                 all_cells=args.all_cells)
    ocfg = other.sweep.jobs[0].cfg
    keys = [a.partition("=")[0] for a in args.against]

    def label(c) -> str:
        return ", ".join(f"{k}={OmegaConf.select(c, k, default='?')}" for k in keys)

    def warn(line: str) -> None:
        print(f"reproduce: {line}", file=sys.stderr)

    paired = pair_cells(study, collect(study, cells.cells, warn), collect(study, other.cells,
                                                                            warn))
    mine, theirs = label(cfg), label(ocfg)
    print()
    print(format_pairs(study, paired, mine, theirs))
    folder, root = _output_folder(cfg, study, args.out)
    path = folder / f"{study.name}-against.md"
    write_file(path, format_pairs(study, paired, mine, theirs, markdown=True) + "\n",
               root=root)
    print(f"\nreproduce: wrote {path}")


def check_names(study, plugins) -> None:
    """Every row's method and column's data set is registered, or one line says which is not,
    in which study, before anything trains or reports "not run"."""
    registry = get_registry(plugins)
    for kind, name, where in [*(("methods", r.method, f"row {r.label!r}") for r in study.rows),
                              *(("datasets", c.dataset, f"column {c.label!r}")
                                for c in study.columns)]:
        try:
            registry.get(kind, name)
        except LtBenchError as exc:
            raise LtBenchError(f"study {study.path}, {where}: {exc}") from None


def _report(study, cells, lines, cfg, out_dir) -> int:
    # here, not at the top: it imports omegaconf
    from lt_bench.compare.render import draw, format_markdown, format_text

    # here, not at the top: it imports omegaconf
    from lt_bench.compare.verdict import build_report, collect

    def warn(line: str) -> None:
        print(f"reproduce: {line}", file=sys.stderr)

    report = build_report(study, collect(study, cells.cells, warn), lines)
    print()
    print(format_text(report))
    folder, root = _output_folder(cfg, study, out_dir)
    picture = draw(report, folder / f"{study.name}.png", root)
    markdown = folder / f"{study.name}.md"
    write_file(markdown, format_markdown(report, picture.name), root=root)
    print(f"\nreproduce: wrote {markdown} and {picture}")
    from lt_bench.tracking import tracker_name  # here, not at the top: it imports omegaconf

    if tracker_name(cfg) == "mlflow":
        # here, not at the top: it imports omegaconf
        from lt_bench.tracking.mlflow_artifacts import log_study_run, study_experiment

        run_id = log_study_run(cfg, study.name, [markdown, picture])
        print(f"reproduce: the report is an artifact of MLflow run {run_id} (experiment "
              f"{study_experiment(study.name)}; lt-bench ui shows it)")
    return 0

"""``lt-bench leaderboard``: mean ± std over seeds per method, with tests against a baseline."""

from __future__ import annotations

FORMATS = ("text", "json", "markdown", "csv")


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "leaderboard", help="compare methods over seeds (read back through the tracker)",
        description="One row per benchmark setting (dataset, imbalance, backbone, protocol) and "
                    "method: top-1 ACCURACY in percent, mean ± sample std over the finished "
                    "seeds, the other epoch's mean, the many/medium/few-shot means, and the "
                    "difference from the baseline method with Welch's t-test and Mann-Whitney U "
                    "p-values (n/a with fewer than 2 seeds on a side). Reads the runs back through "
                    "the configured tracker: tracking.tracker=mlflow (the default) reads the "
                    "MLflow store of the workspace (workspace=DIR) or tracking.uri=URI; "
                    "tracking.tracker=local reads the run folders under DIR/runs.",
        epilog="examples: lt-bench leaderboard dataset=cifar10_lt imbalance=100 --markdown; "
               "lt-bench leaderboard metric=best baseline=ce --json",
    )
    parser.add_argument(
        "args", nargs="*", metavar="KEY=VALUE",
        help="filters dataset=, imbalance=, backbone=, protocol=, method=, cfg_hash=, "
             "experiment=; options metric=final|best (default final), baseline=NAME (default "
             "ce); config keys workspace=, tracking.tracker=, tracking.uri=, or a YAML "
             "config file")
    group = parser.add_mutually_exclusive_group()
    for name in FORMATS[1:]:
        group.add_argument(f"--{name}", dest="format", action="store_const", const=name,
                           help=f"print {name} instead of a text table")
    parser.add_argument(
        "--plot", metavar="FILE.png",
        help="also draw the comparison: per method, mean ± std accuracy over seeds (overall, "
             "many/medium/few) and per-class accuracy against training count; one file per "
             "setting (FILE-<setting>.png) when the rows span several")
    parser.set_defaults(func=run, format="text")


def split(args: list[str]):
    """(config paths, config overrides, filters, options) from the command's arguments."""
    from lt_bench.config import parse_override, split_args
    from lt_bench.leaderboard import FILTER_KEYS

    paths, pairs = split_args(args)
    overrides, filters, options = [], {}, {"metric": "final", "baseline": "ce"}
    for item in pairs:
        key, value = parse_override(item)
        if key in FILTER_KEYS:
            filters[key] = item.partition("=")[2].strip()
        elif key in options:
            options[key] = str(value)
        else:
            overrides.append(item)
    return paths, overrides, filters, options


def run(args) -> int:
    from lt_bench import leaderboard as lb
    from lt_bench.config import load_config

    paths, overrides, filters, options = split(args.args)
    if args.plot:  # a name matplotlib cannot write is refused before the runs are read
        from lt_bench.tracking.comparison_plot import image_format

        image_format(args.plot)
    cfg = load_config(paths, overrides)
    rows = lb.leaderboard(cfg, filters, metric=options["metric"], baseline=options["baseline"])
    render = {"text": lb.format_text, "json": lb.format_json, "markdown": lb.format_markdown,
              "csv": lb.format_csv}[args.format]
    print(render(rows))
    if args.plot:
        plot(rows, cfg, args.plot)
    return 0


def plot(rows: list, cfg, path: str) -> None:
    import sys
    from pathlib import Path

    from lt_bench.errors import LtBenchError
    from lt_bench.tracking.comparison_plot import write_figures

    if not rows:
        raise LtBenchError("leaderboard --plot: no finished seed runs match the filters; drop "
                           "or correct a filter (lt-bench leaderboard without --plot lists them)")

    def say(line: str) -> None:  # stderr: the table on stdout stays parseable with --json/--csv
        print(line, file=sys.stderr)

    for written in write_figures(rows, Path(cfg.workspace).expanduser(), Path(path), out=say):
        say(f"leaderboard: comparison plot written to {written}")

"""``lt-bench leaderboard``: mean ± std over seeds per method, with tests against a baseline."""

from __future__ import annotations

from lt_bench.errors import LtBenchError

FORMATS = ("text", "json", "markdown", "csv")
#: the optional column sets of the text and markdown tables (json and csv have every field)
COLUMNS = {"ece": "the expected calibration error of each group, ECE many/medium/few %",
           "shifted": "top-1 accuracy under shifted test priors (SADE's test-agnostic "
                      "protocol): forward50, forward10, forward5 (long-tailed like the training "
                      "set, imbalance 50, 10, 5), uniform (the mean per-class accuracy), "
                      "backward5, backward10, backward50 (the tail made the head)"}


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "leaderboard", help="compare methods over seeds (read back through the tracker)",
        description="One row per benchmark setting (dataset, imbalance, backbone, protocol) and "
                    "method: top-1 ACCURACY in percent, mean ± sample std over the finished "
                    "seeds, the other epoch's mean, the many/medium/few-shot means (the header "
                    "names the thresholds in training images, eval.many_above and "
                    "eval.few_below of the runs: many (>100), medium (20–100), few (<20) by "
                    "default), the mean expected calibration error (ECE %, 15 equal-width "
                    "confidence bins), and the difference from the baseline method with "
                    "Welch's t-test and Mann-Whitney U p-values (n/a with fewer than 2 seeds on "
                    "a side). A method with two configurations in a setting is named by the "
                    "options that differ, e.g. 'dv (convention=authors)'. Reads the runs back "
                    "through the configured tracker: tracking.tracker=mlflow (the default) reads the "
                    "MLflow store of the workspace (workspace=DIR) or tracking.uri=URI; "
                    "tracking.tracker=local reads the run folders under DIR/runs.",
        epilog="examples: lt-bench leaderboard dataset=cifar10_lt imbalance=100 --markdown; "
               "lt-bench leaderboard metric=best baseline=ce --json; "
               "lt-bench leaderboard --columns ece,shifted",
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
        "--columns", metavar="SET[,SET]", default="",
        help="add column sets to the text and markdown tables (--json and --csv always have "
             "every field): " + "; ".join(f"{k}: {v}" for k, v in COLUMNS.items())
             .replace("%", "%%") + "; all: both")
    parser.add_argument(
        "--plot", metavar="FILE.png",
        help="also draw the comparison: per method (named as in the table), mean ± std "
             "accuracy over seeds (overall, many/medium/few), per-class accuracy against "
             "training count and, where the runs recorded it, accuracy under the shifted test "
             "priors; one legend below the panels with each method's seeds and mean ECE; one "
             "file per setting (FILE-<setting>.png) when the rows span several")
    parser.set_defaults(func=run, format="text")


def split(args: list[str]):
    """(config paths, config overrides, filters, options) from the command's arguments."""
    # here, not at the top: it imports omegaconf
    from lt_bench.compare.leaderboard import FILTER_KEYS

    # here, not at the top: it imports omegaconf
    from lt_bench.config import parse_override, split_args

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
    from lt_bench.compare import leaderboard as lb  # here, not at the top: it imports omegaconf
    from lt_bench.config import load_config  # here, not at the top: it imports omegaconf

    paths, overrides, filters, options = split(args.args)
    columns = parse_columns(args.columns)
    if args.plot:  # a name matplotlib cannot write is refused before the runs are read
        from lt_bench.compare.plot import image_format  # here, not at the top: it imports omegaconf

        image_format(args.plot)
    cfg = load_config(paths, overrides, resolve_method=False)
    rows = lb.leaderboard(cfg, filters, metric=options["metric"], baseline=options["baseline"])
    render = {"text": lambda r: lb.format_text(r, columns), "json": lb.format_json,
              "markdown": lambda r: lb.format_markdown(r, columns),
              "csv": lb.format_csv}[args.format]
    print(render(rows))
    if args.plot:
        plot(rows, cfg, args.plot)
    return 0


def parse_columns(text: str | None) -> tuple[str, ...]:
    """``ece,shifted`` (or ``all``) as the column sets it names, in ``COLUMNS`` order; one
    line naming a set that is not one."""
    names = [n.strip() for n in (text or "").split(",") if n.strip()]
    if names == ["all"]:
        return tuple(COLUMNS)
    for name in names:
        if name not in COLUMNS:
            raise LtBenchError(f"leaderboard --columns: unknown column set {name!r}; choose "
                               f"from {', '.join(COLUMNS)} or all (e.g. --columns ece,shifted)")
    return tuple(n for n in COLUMNS if n in names)


def plot(rows: list, cfg, path: str) -> None:
    import sys
    from pathlib import Path

    from lt_bench.compare.plot import write_figures  # here, not at the top: it imports omegaconf

    if not rows:
        raise LtBenchError("leaderboard --plot: no finished seed runs match the filters; drop "
                           "or correct a filter (lt-bench leaderboard without --plot lists them)")

    def say(line: str) -> None:  # stderr: the table on stdout stays parseable with --json/--csv
        print(line, file=sys.stderr)

    for written in write_figures(rows, Path(cfg.workspace).expanduser(), Path(path), out=say):
        say(f"leaderboard: comparison plot written to {written}")

"""``lt-bench data describe``: the long-tailed data a config selects, its counts and groups."""

from __future__ import annotations

import json
from pathlib import Path

from lt_bench.data import load_data
from lt_bench.data.groups import thresholds_of
from lt_bench.errors import LtBenchError


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "data", help="inspect the long-tailed data sets",
        description="Inspect the long-tailed data a config selects.",
    )
    data_sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    describe = data_sub.add_parser(
        "describe", help="classes, per-class counts, imbalance, many/medium/few, histogram",
        description="Load the data set a config selects (YAML files and key=value overrides, "
                    "e.g. dataset=cifar10_lt imbalance=100 data.root=./data) and describe its "
                    "training split: classes, per-class counts, total, measured imbalance, "
                    "many/medium/few group sizes and a text histogram.",
    )
    describe.add_argument("args", nargs="*", metavar="CONFIG.yaml | key=value")
    describe.add_argument("--json", action="store_true", help="print the description as JSON")
    describe.set_defaults(func=run)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)


# -- config --------------------------------------------------------------------------------
def load(args: list[str]):
    paths = [a for a in args if "=" not in a]
    overrides = [a for a in args if "=" in a]
    for p in paths:
        if not Path(p).is_file():
            raise LtBenchError(f"config file {p!r} not found (give a YAML file or key=value)")
    from lt_bench.config import load_config  # here, not at the top: it imports omegaconf

    return load_config(paths, overrides)


# -- output --------------------------------------------------------------------------------
def histogram(counts: list[int], classes: list[str], width: int = 50, rows: int = 40) -> str:
    """One bar per class (or per run of classes, averaged, when there are more than ``rows``)."""
    if not counts:
        return ""
    top = max(counts) or 1
    if len(counts) <= rows:
        spans = [(i, i + 1) for i in range(len(counts))]
    else:
        step = len(counts) / rows
        spans = [(round(i * step), round((i + 1) * step)) for i in range(rows)]
    label_w = max(len(_label(classes, a, b)) for a, b in spans)
    lines = []
    for a, b in spans:
        n = sum(counts[a:b]) / (b - a)
        bar = "█" * max(1 if n > 0 else 0, round(width * n / top))
        lines.append(f"  {_label(classes, a, b):<{label_w}} {bar} {n:,.0f}")
    return "\n".join(lines)


def _label(classes: list[str], a: int, b: int) -> str:
    return classes[a] if b - a == 1 else f"classes {a}–{b - 1}"


def run(args) -> int:
    from omegaconf import OmegaConf

    cfg = load(args.args)
    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    data = load_data(cfg.dataset, cfg.imbalance, data_cfg)

    info = data.describe(**thresholds_of(cfg.get("eval")))
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    g = info["groups"]
    print(f"{info['name']}: {info['num_classes']} classes, {info['total']:,} training images "
          f"(imbalance {info['imbalance']:.1f}), {info['test_total']:,} test images")
    t = info["group_thresholds"]
    print(f"groups: many {g['many']}, medium {g['medium']}, few {g['few']} (many > "
          f"{t['many_above']}, medium {t['few_below']}–{t['many_above']}, few < {t['few_below']} "
          "training images; eval.many_above, eval.few_below)")
    print(histogram(info["counts"], info["classes"]))
    if data.source_line:
        print(data.source_line)
    held = [f"{info[k]:,} {what} images ({info[k] // info['num_classes']} per class, "
            f"data.{key})" for k, what, key in (("val_total", "validation", "val_per_class"),
                                                 ("meta_total", "meta-set", "meta_per_class"))
            if info.get(k)]
    if held:
        print("held out of training: " + "; ".join(held))
    return 0

"""The leaderboard: finished seed runs from the tracking store, one row per (setting, method).

A *setting* is (dataset, imbalance, backbone, protocol). Within a setting each (method, config
hash) is one row: normally one per method; a method run with two configurations gives two rows,
named by the options that differ (``dv (convention=authors)``, ``records.labels``). A row holds,
over its seeds, the mean ± std (sample std, ddof=1) of top-1 **accuracy** (higher is better;
``metric=final`` by default, the last epoch, or ``metric=best``, the best epoch on the test set
as much of the literature reports), the mean of the other one, the number of seeds, the many /
medium / few-shot means (thresholds ``eval.many_above`` / ``few_below``), the mean expected
calibration error and the accuracies under shifted test priors (``lt_bench.run.evaluate``), and
its difference from the baseline method of the same setting (``baseline=ce``) with the p-values
of Welch's t-test (``scipy.stats.ttest_ind(equal_var=False)``) and the two-sided Mann–Whitney U
test. A test needs at least 2 seeds on each side; otherwise the row says so.

Runs on different data are never pooled, nor compared: a run's data fingerprint (the tag
``lt.data_fingerprint``, ``lt_bench.workspace.provenance``; "unknown" for a run from before it
was kept) is part of its row's key, a (method, config) on two data sets gives two rows and one
warning line naming both, and a row is tested against the baseline's row on the same data only.

Runs are read back through the tracker's ``runs_for_leaderboard`` (``lt_bench.tracking.base``):
the MLflow store in bulk (``tracking.mlflow_read``), or the run folders for ``tracker=local``.
This module is only the statistics and the output formats.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import warnings
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from lt_bench.data.groups import FEW, GROUP_NAMES, MANY, group_rule
from lt_bench.errors import LtBenchError
from lt_bench.tracking import cannot_read_back, read_back, tracker_for, tracker_name
from lt_bench.tracking.records import SETTING, from_tags, labels, mean, sample_std
from lt_bench.tracking.store import TAG, imbalance_tag
from lt_bench.workspace.provenance import fingerprint, split_warning
from lt_bench.workspace.record import SHIFTED

log = logging.getLogger(__name__)

FILTER_KEYS = (*SETTING, "method", "cfg_hash", "experiment")
NEEDS_SEEDS = "n/a: needs ≥ 2 seeds"


@dataclass
class Row:
    dataset: str
    imbalance: str
    backbone: str
    protocol: str
    method: str
    cfg_hash: str
    metric: str
    n: int
    mean: float
    std: float | None
    best_mean: float | None  # the other metric's mean (best-epoch when metric=final, and back)
    acc_many: float | None
    acc_medium: float | None
    acc_few: float | None
    baseline: str | None = None
    diff: float | None = None
    p_value: float | None = None  # Welch's t-test
    p_value_mwu: float | None = None  # Mann–Whitney U
    test_note: str = ""
    values: list[float] = field(default_factory=list)
    seeds: list[str] = field(default_factory=list)
    # per group (many/medium/few), the seeds' values: the plot's error bars need their spread
    group_values: dict[str, list[float]] = field(default_factory=dict)
    # the data fingerprint its runs share (lt_bench.workspace.provenance); "unknown" for older runs
    data: str = ""
    label: str = ""  # the method, with the options that set it apart in its setting
    ece: float | None = None  # mean expected calibration error over seeds, and per group
    ece_many: float | None = None
    ece_medium: float | None = None
    ece_few: float | None = None
    shifted: dict[str, float] = field(default_factory=dict)  # prior name → mean accuracy
    many_above: int = MANY  # the group thresholds of its runs (eval.*)
    few_below: int = FEW


# -- statistics ---------------------------------------------------------------------------------
def compare(values: list[float], base: list[float]) -> tuple[float | None, float | None, str]:
    """Welch's t-test and Mann–Whitney U p-values (two-sided) of ``values`` against ``base``."""
    if len(values) < 2 or len(base) < 2:
        return None, None, NEEDS_SEEDS
    from scipy import stats

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        welch = float(stats.ttest_ind(values, base, equal_var=False).pvalue)
        mwu = float(stats.mannwhitneyu(values, base, alternative="two-sided").pvalue)
    if math.isnan(welch):  # no spread on either side: the t statistic is undefined
        welch = 1.0 if mean(values) == mean(base) else 0.0
    return welch, mwu, ""


def build(runs: list[dict], metric: str = "final", baseline: str = "ce",
          filters: dict[str, str] | None = None,
          warn: Callable[[str], Any] | None = None) -> list[Row]:
    """Rows sorted by setting then mean accuracy (best first). Runs of one (method, config) on
    different data (``lt.data_fingerprint``) are never pooled: each data set is a row of its
    own, and ``warn`` (default: the log) gets one line naming the data sets and what differs."""
    if metric not in ("final", "best"):
        raise LtBenchError(f"leaderboard: metric must be final or best, got {metric!r}")
    grouped: dict[tuple, list[dict]] = defaultdict(list)
    for key, run in _latest(runs, metric, filters).items():
        grouped[key[:-1]].append(run)
    rows = [_row(key, members, metric) for key, members in grouped.items()]
    params = {id(row): members[0].get("params") or {}
              for row, members in zip(rows, grouped.values())}
    _warn_of_splits(grouped, warn or log.warning)
    by_setting: dict[tuple, list[Row]] = defaultdict(list)
    for row in rows:
        by_setting[tuple(getattr(row, k) for k in SETTING)].append(row)
    for members in by_setting.values():
        _against_baseline(members, baseline)
        names = labels([(r.method, r.cfg_hash, r.data, params[id(r)]) for r in members])
        for row, name in zip(members, names):
            row.label = name
    return sorted(rows, key=lambda r: (_setting_order(r), -(r.mean or 0.0), r.method))


def _latest(runs: list[dict], metric: str, filters: dict[str, str] | None) -> dict[tuple, dict]:
    """The runs that match, by (setting, method, cfg_hash, data, seed): a seed run twice on the
    same data counts once, its latest run."""
    filters = {k: str(v) for k, v in (filters or {}).items() if k != "experiment"}
    latest: dict[tuple, dict] = {}
    for run in runs:
        tags = run["tags"]
        if f"{metric}/acc" not in run["metrics"]:
            continue
        if any(_norm(k, tags.get(f"{TAG}{k}", "")) != _norm(k, v) for k, v in filters.items()):
            continue
        key = (*(tags.get(f"{TAG}{k}", "") for k in (*SETTING, "method", "cfg_hash")),
               _data(run), tags.get(f"{TAG}seed", run["run_id"]))
        if key not in latest or run["end_time"] > latest[key]["end_time"]:
            latest[key] = run
    return latest


def _data(run: dict) -> str:
    return fingerprint(from_tags(run["tags"]))


def _row(key: tuple, members: list[dict], metric: str) -> Row:
    other = "best" if metric == "final" else "final"
    members.sort(key=lambda r: _seed_order(r["tags"].get(f"{TAG}seed", "")))
    values = [r["metrics"][f"{metric}/acc"] for r in members]

    def mean_of(name: str) -> float | None:
        return mean([r["metrics"][name] for r in members if name in r["metrics"]])

    params = members[0].get("params") or {}
    shifted = {name: mean_of(f"{metric}/shifted_{name}") for name in SHIFTED}
    return Row(*key[:-1], metric=metric, n=len(values), mean=mean(values),
               std=sample_std(values), best_mean=mean_of(f"{other}/acc"),
               **{f"{k}_{g}": mean_of(f"{metric}/{k}_{g}") for k in ("acc", "ece")
                  for g in GROUP_NAMES}, ece=mean_of(f"{metric}/ece"),
               shifted={k: v for k, v in shifted.items() if v is not None}, values=values,
               seeds=[r["tags"].get(f"{TAG}seed", "") for r in members],
               group_values={g: [r["metrics"][f"{metric}/acc_{g}"] for r in members
                                 if f"{metric}/acc_{g}" in r["metrics"]]
                             for g in GROUP_NAMES}, data=key[-1],
               many_above=_int(params.get("eval.many_above"), MANY),
               few_below=_int(params.get("eval.few_below"), FEW))


def _int(text: str | None, default: int) -> int:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default


def _warn_of_splits(grouped: dict[tuple, list[dict]], warn: Callable[[str], Any]) -> None:
    """One line per (setting, method, cfg_hash) whose runs are on more than one data set."""
    by_config: dict[tuple, dict[str, list[dict]]] = defaultdict(dict)
    for key, members in grouped.items():
        by_config[key[:-1]][key[-1]] = [from_tags(r["tags"]) for r in members]
    for (dataset, imbalance, backbone, protocol, method, cfg), groups in by_config.items():
        ordered = dict(sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])))
        label = f"leaderboard: {dataset} IF {imbalance} {backbone} {protocol} {method}@{cfg}"
        if (line := split_warning(label, ordered)) is not None:
            warn(line)


def _against_baseline(members: list[Row], baseline: str) -> None:
    """Each row's difference from the baseline method's row on the same data (its config with
    the most seeds), with the tests; a row on other data than every baseline row is not
    compared."""
    bases = [r for r in members if r.method == baseline]
    for row in members:
        same = [r for r in bases if r.data == row.data]
        if not same:
            row.test_note = (f"n/a: no {baseline!r} baseline runs in this setting" if not bases
                             else f"n/a: no {baseline!r} baseline runs on data {row.data}")
            continue
        base = max(same, key=lambda r: r.n)
        row.baseline = f"{base.method}@{base.cfg_hash}"
        if row is base:
            row.test_note = "baseline"
            continue
        row.diff = row.mean - base.mean
        row.p_value, row.p_value_mwu, row.test_note = compare(row.values, base.values)


def _seed_order(seed: str):
    return (0, int(seed)) if seed.lstrip("-").isdigit() else (1, seed)


def _norm(key: str, value: str) -> str:
    if key == "imbalance":
        try:
            return imbalance_tag(value)
        except ValueError:  # "none" (a naturally long-tailed set) in any case
            return value.lower()
    return value


def _setting_order(row: Row) -> tuple:
    try:
        imbalance = float(row.imbalance)
    except ValueError:
        imbalance = math.inf
    return (row.dataset, imbalance, row.backbone, row.protocol)


def leaderboard(cfg: Any, filters: dict[str, str] | None = None, metric: str = "final",
                baseline: str = "ce") -> list[Row]:
    filters = dict(filters or {})
    unknown = [k for k in filters if k not in FILTER_KEYS]
    if unknown:
        raise LtBenchError(f"leaderboard: unknown filter {unknown[0]!r}; filters: "
                           f"{', '.join(FILTER_KEYS)} (plus metric=, baseline=)")
    runs = tracked_runs(cfg, filters.get("experiment"))
    return build(runs, metric=metric, baseline=baseline, filters=filters)


def sweep_rows(cfgs: list, metric: str, baseline: str) -> list[Row] | None:
    """A sweep's closing leaderboard: the rows of its settings, read back through its first
    run's tracker; None when that tracker cannot be read back (the sweep has said so)."""
    first = cfgs[0]
    runs = read_back(tracker_for(first), "runs_for_leaderboard", first.tracking.experiment)
    if runs is None:
        return None
    settings = {(c.dataset, imbalance_tag(c.imbalance), c.backbone.name) for c in cfgs}
    return [r for r in build(runs, metric=metric, baseline=baseline)
            if (r.dataset, r.imbalance, r.backbone) in settings]


def tracked_runs(cfg: Any, experiment: str | None = None) -> list[dict]:
    """The finished seed runs, read back through the tracker ``tracking.tracker`` names."""
    runs = read_back(tracker_for(cfg), "runs_for_leaderboard", experiment)
    if runs is None:
        raise LtBenchError(cannot_read_back(tracker_name(cfg)))
    return runs


# -- output -------------------------------------------------------------------------------------
def _pct(v: float | None, digits: int = 2) -> str:
    return "n/a" if v is None else f"{100 * v:.{digits}f}"


def _p(v: float | None) -> str:
    return "" if v is None else (f"{v:.3g}" if v >= 1e-3 else f"{v:.1e}")


def _cells(row: Row, with_data: bool = False, columns: tuple[str, ...] = (),
           with_cfg: bool = True) -> list[str]:
    std = "" if row.std is None else f" ± {100 * row.std:.2f}"
    diff = "" if row.diff is None else f"{100 * row.diff:+.2f}"
    return [row.label or row.method, *([row.cfg_hash] if with_cfg else []),
            *([row.data] if with_data else []),
            f"{_pct(row.mean)}{std}", str(row.n), _pct(row.best_mean),
            _pct(row.acc_many), _pct(row.acc_medium), _pct(row.acc_few), _pct(row.ece),
            *([_pct(getattr(row, f"ece_{g}")) for g in GROUP_NAMES] if "ece" in columns else []),
            *([_pct(row.shifted.get(n)) for n in SHIFTED] if "shifted" in columns else []),
            diff, _p(row.p_value) or row.test_note, _p(row.p_value_mwu) or
            ("" if row.test_note in ("baseline",) else row.test_note)]


def _header(members: list[Row], with_data: bool = False, columns: tuple[str, ...] = (),
            with_cfg: bool = True) -> list[str]:
    metric = members[0].metric
    other = "best" if metric == "final" else "final"
    rules = {g: " | ".join(dict.fromkeys(group_rule(g, r.many_above, r.few_below)
                                         for r in members)) for g in GROUP_NAMES}
    return ["method", *(["cfg"] if with_cfg else []), *(["data"] if with_data else []),
            f"{metric} acc % (mean ± std)", "seeds", f"{other} acc %",
            *(f"{g} ({rules[g]}) %" for g in GROUP_NAMES), "ECE %",
            *([f"ECE {g} %" for g in GROUP_NAMES] if "ece" in columns else []),
            *([f"{n} %" for n in SHIFTED] if "shifted" in columns else []),
            "Δ vs baseline", "p (Welch)", "p (Mann–Whitney)"]


def _threshold_note(members: list[Row]) -> str:
    """A line under a table whose rows counted many/medium/few with other thresholds."""
    rules: dict[str, list[str]] = {}
    for r in members:
        rules.setdefault(f"many >{r.many_above}, few <{r.few_below}", []).append(
            r.label or r.method)
    if len(rules) < 2:
        return ""
    return "group thresholds differ: " + "; ".join(f"{', '.join(names)}: {rule}"
                                                  for rule, names in rules.items())


def _title(row: Row) -> str:
    return (f"{row.dataset}, imbalance {row.imbalance}, {row.backbone}, protocol {row.protocol}"
            f" — top-1 accuracy over seeds, {row.metric} epoch")


def _by_setting(rows: list[Row]):
    out: dict[tuple, list[Row]] = {}
    for row in rows:
        out.setdefault(tuple(getattr(row, k) for k in SETTING), []).append(row)
    return out.values()


def _mixed(members: list[Row]) -> bool:
    """Whether a setting's rows are on more than one data set: its table then has a data
    column (the fingerprint), as its rows are not comparable across it."""
    return len({r.data for r in members}) > 1


def _two_settings(members: list[Row]) -> bool:
    """A method with two configurations: only then is the hash shown (labels name the rest)."""
    return len({(r.method, r.cfg_hash) for r in members}) > len({r.method for r in members})


def format_text(rows: list[Row], columns: tuple[str, ...] = ()) -> str:
    """The tables, one per setting; ``columns``: the optional sets of ``COLUMNS`` to add."""
    if not rows:
        return "no finished runs match (lt-bench leaderboard lists seed runs with status FINISHED)"
    blocks = []
    for members in _by_setting(rows):
        mixed, cfg = _mixed(members), _two_settings(members)
        table = [_header(members, mixed, columns, cfg),
                 *(_cells(r, mixed, columns, cfg) for r in members)]
        widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in table]
        lines.insert(1, "  ".join("-" * w for w in widths))
        note = _threshold_note(members)
        blocks.append(_title(members[0]) + "\n" + "\n".join(lines) + (f"\n{note}" if note else ""))
    return "\n\n".join(blocks)


def format_markdown(rows: list[Row], columns: tuple[str, ...] = ()) -> str:
    blocks = []
    for members in _by_setting(rows):
        mixed, cfg = _mixed(members), _two_settings(members)
        header = _header(members, mixed, columns, cfg)
        lines = [f"**{_title(members[0])}**", "", "| " + " | ".join(header) + " |",
                 "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(_cells(r, mixed, columns, cfg)) + " |" for r in members]
        if note := _threshold_note(members):
            lines += ["", note]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) if blocks else "_no finished runs_"


def as_dicts(rows: list[Row]) -> list[dict]:
    """Rows as plain dicts; ``imbalance`` a number (null for a naturally long-tailed set)."""
    out = []
    for row in map(asdict, rows):
        try:
            row["imbalance"] = float(row["imbalance"])
        except ValueError:
            row["imbalance"] = None  # the tag says "none": no imbalance factor was applied
        out.append(row)
    return out


def format_json(rows: list[Row]) -> str:
    return json.dumps(as_dicts(rows), indent=1)


def format_csv(rows: list[Row]) -> str:
    """Every field but the per-seed lists; ``shifted`` as one column per prior."""
    out = io.StringIO()
    names = [k for k in Row.__dataclass_fields__
             if k not in ("values", "seeds", "group_values", "shifted")]
    names += [f"shifted_{n}" for n in SHIFTED]
    w = csv.DictWriter(out, fieldnames=names, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for row in as_dicts(rows):
        row.update({f"shifted_{n}": row["shifted"].get(n) for n in SHIFTED})
        w.writerow({k: "" if row[k] is None else row[k] for k in names})
    return out.getvalue()

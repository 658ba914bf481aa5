"""The leaderboard: finished seed runs from the tracking store, one row per (setting, method).

A *setting* is (dataset, imbalance, backbone, protocol). Within a setting each (method, config
hash) is one row: normally one per method; a method run with two configurations (say two learning
rates) gives two rows, told apart by their hash. A row holds, over its seeds, the mean ± std
(sample std, ddof=1) of top-1 **accuracy** (higher is better; ``metric=final`` by default, the
last epoch, or ``metric=best``, the best epoch on the test set as much of the literature
reports), the mean of the other one, the number of seeds and the many / medium / few-shot means,
and its difference from the baseline method of the same setting (``baseline=ce``) with the
p-values of Welch's t-test (``scipy.stats.ttest_ind(equal_var=False)``) and the two-sided
Mann–Whitney U test. A test needs at least 2 seeds on each side; otherwise the row says so.

Runs are read in bulk: from an SQL store (the default SQLite file, PostgreSQL, MySQL) with three
SQL queries over MLflow's tables (only the lt.* tags and the final/best metrics, no params, and
without importing MLflow); from a tracking server with ``search_runs`` page by page.
"""

from __future__ import annotations

import csv
import io
import json
import math
import warnings
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from lt_bench.errors import LtBenchError
from lt_bench.tracking.store import TAG, client, get, retry, tracking_uri

SETTING = ("dataset", "imbalance", "backbone", "protocol")
FILTER_KEYS = (*SETTING, "method", "cfg_hash", "experiment")
GROUPS = ("acc_many", "acc_medium", "acc_few")
TAG_KEYS = tuple(f"{TAG}{k}" for k in (*SETTING, "method", "cfg_hash", "seed", "role"))
METRIC_KEYS = tuple(f"{w}/{k}" for w in ("final", "best") for k in ("acc", *GROUPS))
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


# -- reading runs -------------------------------------------------------------------------------
SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")


def _is_sql(uri: str) -> bool:
    return uri.split(":", 1)[0].split("+", 1)[0] in SQL_SCHEMES


def _read_sql(uri: str, experiment: str | None) -> list[dict]:
    """Finished seed runs as ``{"run_id", "end_time", "tags", "metrics"}``: three bulk queries
    on MLflow's tables (``runs``, ``tags``, ``latest_metrics``) with SQLAlchemy, without
    importing MLflow (whose import alone takes seconds)."""
    import sqlalchemy as sa

    engine = sa.create_engine(uri)
    try:
        with engine.connect() as conn:
            exp_filter, params = "", {}
            if experiment:
                row = conn.execute(sa.text(
                    "SELECT experiment_id FROM experiments WHERE name = :name"),
                    {"name": experiment}).first()
                if row is None:
                    raise LtBenchError(f"experiment {experiment!r} not found in {uri}")
                exp_filter, params = " AND r.experiment_id = :exp", {"exp": row[0]}
            seeds = ("SELECT r.run_uuid FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
                     f"WHERE t.key = '{TAG}role' AND t.value = 'seed' AND r.status = 'FINISHED' "
                     f"AND r.lifecycle_stage = 'active'{exp_filter}")
            runs = {}
            for run_id, end, exp in conn.execute(sa.text(
                    "SELECT run_uuid, end_time, experiment_id FROM runs "
                    f"WHERE run_uuid IN ({seeds})"), params):
                runs[run_id] = {"run_id": run_id, "end_time": end or 0,
                                "experiment_id": str(exp), "tags": {}, "metrics": {}}
            if not runs:
                return []
            for table, keys, target in (("tags", TAG_KEYS, "tags"),
                                        ("latest_metrics", METRIC_KEYS, "metrics")):
                names = ", ".join(f"'{k}'" for k in keys)  # constants, not user input
                for run_id, key, value in conn.execute(sa.text(
                        f"SELECT run_uuid, key, value FROM {table} WHERE key IN ({names}) "
                        f"AND run_uuid IN ({seeds})"), params):
                    if run_id in runs:
                        runs[run_id][target][key] = value
    finally:
        engine.dispose()
    return list(runs.values())


def _read_search(c, experiment_ids: list[str]) -> list[dict]:
    from lt_bench.tracking.mlflow_tracker import search_all

    out = []
    query = f"tags.`{TAG}role` = 'seed' and attributes.status = 'FINISHED'"
    for i in range(0, len(experiment_ids), 100):
        for run in search_all(c, experiment_ids[i:i + 100], query):
            out.append({"run_id": run.info.run_id, "end_time": run.info.end_time or 0,
                        "experiment_id": run.info.experiment_id,
                        "tags": {k: v for k, v in run.data.tags.items() if k in TAG_KEYS},
                        "metrics": {k: v for k, v in run.data.metrics.items()
                                    if k in METRIC_KEYS}})
    return out


def load_runs(cfg: Any, experiment: str | None = None) -> list[dict]:
    """The finished seed runs of the store named by ``cfg`` (``tracking.uri`` / workspace), of
    one experiment (by name) or of all."""
    uri = tracking_uri(cfg)
    if (db := _sqlite_file(uri)) is not None and not db.exists():
        raise LtBenchError(
            f"no tracking store at {db}: run `lt-bench sweep ...` or `lt-bench train "
            "tracking.tracker=mlflow ...` first, or point workspace= / tracking.uri= at one")
    experiment = experiment or get(cfg, "tracking.experiment")
    if _is_sql(uri):
        try:
            return retry(_read_sql, uri, experiment)
        except LtBenchError:
            raise
        except Exception as exc:
            raise LtBenchError(f"cannot read the tracking store {uri!r}: "
                               f"{type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
    c = client(uri)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if experiment:
            exp = retry(c.get_experiment_by_name, str(experiment))
            if exp is None:
                raise LtBenchError(f"experiment {experiment!r} not found in {uri}")
            ids = [exp.experiment_id]
        else:
            ids = [e.experiment_id for e in retry(c.search_experiments, max_results=50000)]
        return _read_search(c, ids)


def _sqlite_file(uri: str):
    from lt_bench.tracking.store import sqlite_path

    return sqlite_path(uri)


# -- statistics ---------------------------------------------------------------------------------
def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _std(values: list[float]) -> float | None:
    if len(values) < 2:
        return None
    m = sum(values) / len(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


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
        welch = 1.0 if _mean(values) == _mean(base) else 0.0
    return welch, mwu, ""


def build(runs: list[dict], metric: str = "final", baseline: str = "ce",
          filters: dict[str, str] | None = None) -> list[Row]:
    """Rows sorted by setting then mean accuracy (best first)."""
    if metric not in ("final", "best"):
        raise LtBenchError(f"leaderboard: metric must be final or best, got {metric!r}")
    other = "best" if metric == "final" else "final"
    filters = {k: str(v) for k, v in (filters or {}).items() if k != "experiment"}
    latest: dict[tuple, dict] = {}
    for run in runs:
        tags = run["tags"]
        if f"{metric}/acc" not in run["metrics"]:
            continue
        if any(_norm(k, tags.get(f"{TAG}{k}", "")) != _norm(k, v) for k, v in filters.items()):
            continue
        key = (*(tags.get(f"{TAG}{k}", "") for k in (*SETTING, "method", "cfg_hash")),
               tags.get(f"{TAG}seed", run["run_id"]))
        if key not in latest or run["end_time"] > latest[key]["end_time"]:
            latest[key] = run  # a seed run twice counts once, its latest run
    grouped: dict[tuple, list[dict]] = defaultdict(list)
    for key, run in latest.items():
        grouped[key[:-1]].append(run)

    rows = []
    for key, members in grouped.items():
        members.sort(key=lambda r: _seed_order(r["tags"].get(f"{TAG}seed", "")))
        values = [r["metrics"][f"{metric}/acc"] for r in members]

        def mean_of(name: str, members=members) -> float | None:
            return _mean([r["metrics"][name] for r in members if name in r["metrics"]])

        rows.append(Row(*key, metric=metric, n=len(values), mean=_mean(values),
                        std=_std(values), best_mean=mean_of(f"{other}/acc"),
                        acc_many=mean_of(f"{metric}/acc_many"),
                        acc_medium=mean_of(f"{metric}/acc_medium"),
                        acc_few=mean_of(f"{metric}/acc_few"), values=values,
                        seeds=[r["tags"].get(f"{TAG}seed", "") for r in members]))
    by_setting: dict[tuple, list[Row]] = defaultdict(list)
    for row in rows:
        by_setting[tuple(getattr(row, k) for k in SETTING)].append(row)
    for members in by_setting.values():
        bases = [r for r in members if r.method == baseline]
        if not bases:
            for row in members:
                row.test_note = f"n/a: no {baseline!r} baseline runs in this setting"
            continue
        base = max(bases, key=lambda r: r.n)  # the baseline configuration with most seeds
        for row in members:
            row.baseline = f"{base.method}@{base.cfg_hash}"
            if row is base:
                row.test_note = "baseline"
                continue
            row.diff = row.mean - base.mean
            row.p_value, row.p_value_mwu, row.test_note = compare(row.values, base.values)
    return sorted(rows, key=lambda r: (_setting_order(r), -(r.mean or 0.0), r.method))


def _seed_order(seed: str):
    return (0, int(seed)) if seed.lstrip("-").isdigit() else (1, seed)


def _norm(key: str, value: str) -> str:
    if key == "imbalance":
        try:
            return f"{float(value):g}"
        except ValueError:
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
    runs = load_runs(cfg, filters.get("experiment"))
    return build(runs, metric=metric, baseline=baseline, filters=filters)


# -- output -------------------------------------------------------------------------------------
def _pct(v: float | None, digits: int = 2) -> str:
    return "n/a" if v is None else f"{100 * v:.{digits}f}"


def _p(v: float | None) -> str:
    return "" if v is None else (f"{v:.3g}" if v >= 1e-3 else f"{v:.1e}")


def _cells(row: Row) -> list[str]:
    std = "" if row.std is None else f" ± {100 * row.std:.2f}"
    diff = "" if row.diff is None else f"{100 * row.diff:+.2f}"
    return [row.method, row.cfg_hash, f"{_pct(row.mean)}{std}", str(row.n), _pct(row.best_mean),
            _pct(row.acc_many), _pct(row.acc_medium), _pct(row.acc_few), diff,
            _p(row.p_value) or row.test_note, _p(row.p_value_mwu) or
            ("" if row.test_note in ("baseline",) else row.test_note)]


def _header(metric: str) -> list[str]:
    other = "best" if metric == "final" else "final"
    return ["method", "cfg", f"{metric} acc % (mean ± std)", "seeds", f"{other} acc %",
            "many %", "medium %", "few %", "Δ vs baseline", "p (Welch)", "p (Mann–Whitney)"]


def _title(row: Row) -> str:
    return (f"{row.dataset}, imbalance {row.imbalance}, {row.backbone}, protocol {row.protocol}"
            f" — top-1 accuracy over seeds, {row.metric} epoch")


def _by_setting(rows: list[Row]):
    out: dict[tuple, list[Row]] = {}
    for row in rows:
        out.setdefault(tuple(getattr(row, k) for k in SETTING), []).append(row)
    return out.values()


def format_text(rows: list[Row]) -> str:
    if not rows:
        return "no finished runs match (lt-bench leaderboard lists seed runs with status FINISHED)"
    blocks = []
    for members in _by_setting(rows):
        table = [_header(members[0].metric), *(_cells(r) for r in members)]
        widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in table]
        lines.insert(1, "  ".join("-" * w for w in widths))
        blocks.append(_title(members[0]) + "\n" + "\n".join(lines))
    return "\n\n".join(blocks)


def format_markdown(rows: list[Row]) -> str:
    blocks = []
    for members in _by_setting(rows):
        header = _header(members[0].metric)
        lines = [f"**{_title(members[0])}**", "", "| " + " | ".join(header) + " |",
                 "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(_cells(r)) + " |" for r in members]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) if blocks else "_no finished runs_"


def as_dicts(rows: list[Row]) -> list[dict]:
    """Rows as plain dicts; ``imbalance`` a number (null for a naturally long-tailed set)."""
    out = []
    for row in map(asdict, rows):
        try:
            row["imbalance"] = float(row["imbalance"])
        except ValueError:
            row["imbalance"] = None  # the tag says "None": no imbalance factor was applied
        out.append(row)
    return out


def format_json(rows: list[Row]) -> str:
    return json.dumps(as_dicts(rows), indent=1)


def format_csv(rows: list[Row]) -> str:
    out = io.StringIO()
    names = [k for k in Row.__dataclass_fields__ if k not in ("values", "seeds")]
    w = csv.DictWriter(out, fieldnames=names, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for row in as_dicts(rows):
        w.writerow({k: "" if row[k] is None else row[k] for k in names})
    return out.getvalue()

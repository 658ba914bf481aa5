"""A study's report: each cell of ours beside the paper's, the difference with its 95 % interval,
a verdict, and the paper's claims checked on our runs.

Ours, per cell: the finished seed runs' ``results.json`` (the study's statistic and the other
one, in the paper's unit: top-1 error or accuracy in %), mean ± sample std (n). Runs of two data
fingerprints are never pooled (``lt_bench.workspace.provenance``): the cell keeps the larger group and
says so. The difference ours − paper has Welch's 95 % interval from both sides' mean, std and n
(a paper cell without a std: ours alone, a one-sample interval), and the verdict is
*consistent* (the interval holds 0), *differs*, or *too few seeds* (fewer than 2 of ours). A
claim "A beats B" is tested per column with a one-sided Welch test on the seeds; it *holds*
where A is better in every compared cell and significantly so (p ≤ 0.05), *direction only*
where A is better but not everywhere significantly, and *fails* where B is as good or better
in some cell.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from lt_bench.compare.study import Cell, Claim, Study
from lt_bench.config import config_hash, to_dict
from lt_bench.tracking.records import mean, sample_std
from lt_bench.workspace.layout import CONFIG, folder_name, results_file
from lt_bench.workspace.provenance import fingerprint_groups, pooling_warning
from lt_bench.workspace.record import RunResult, finished_or_skip

ALPHA = 0.05


@dataclass
class Ours:
    values: list[float] = field(default_factory=list)  # the study's statistic, in %
    other: list[float] = field(default_factory=list)  # the other statistic, in %
    seeds: list[int] = field(default_factory=list)
    note: str = ""

    @property
    def n(self) -> int:
        return len(self.values)


def in_paper_unit(acc: float, reports: str) -> float:
    return 100.0 * (1.0 - acc) if reports == "error" else 100.0 * acc


def ours_of(results: list[RunResult], study: Study) -> Ours:
    """The cell's numbers from its finished runs, one data fingerprint only: the largest
    group, with a note naming the others."""
    groups = fingerprint_groups(results)
    note = ""
    if len(groups) > 1:
        shown = next(iter(groups))
        note = f"{pooling_warning('runs', results)}; shown: data {shown}"
        results = groups[shown]
    other = "final" if study.statistic == "best" else "best"
    out = Ours(note=note)
    for r in sorted(results, key=lambda r: r.seed):
        main, second = r.score(study.statistic), r.score(other)
        if main is None:
            continue
        out.values.append(in_paper_unit(main.acc, study.reports))
        out.other.append(in_paper_unit(second.acc, study.reports) if second else math.nan)
        out.seeds.append(r.seed)
    return out


def collect(study: Study, cells: dict[tuple[str, str], list], warn=print) -> dict:
    """(row, column) → Ours, from the run folders of each cell's jobs."""
    out = {}
    for key, jobs in cells.items():
        results = [finished_or_skip(results_file(run_dir_of(j)), warn) for j in jobs]
        out[key] = ours_of([r for r in results if r is not None], study)
    return out


def _where_free_hash(cfg) -> str:
    d = to_dict(cfg) if not isinstance(cfg, dict) else dict(cfg)
    d["data"] = {k: v for k, v in d.get("data", {}).items() if k != "root"}
    return config_hash(d)


def run_dir_of(job) -> Path:
    """The job's run folder, or the folder of the same run trained with the data elsewhere:
    ``data.root`` is part of a folder's name, so runs brought home from another machine (or
    a report made without that machine's ``data.root``) would not be found by name. Which
    data they saw is the fingerprint's business (``ours_of``)."""
    own = Path(job.run_dir)
    if results_file(own).is_file():
        return own
    from omegaconf import OmegaConf

    want = _where_free_hash(job.cfg)
    pattern = f"{folder_name(job.cfg.dataset, job.method, '*', job.seed)}/{CONFIG}"
    for path in sorted(own.parent.glob(pattern)):
        try:
            if _where_free_hash(OmegaConf.load(path)) == want:
                return path.parent
        except Exception:  # a folder that is not a run's: not this one
            continue
    return own


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    return mean(values), sample_std(values)  # the leaderboard's statistics, ddof 1


def welch_interval(m1: float, s1: float, n1: int, m2: float, s2: float | None,
                   n2: int | None, level: float = 0.95) -> tuple[float, float]:
    """The ``level`` interval of the difference of means m1 − m2 (Welch–Satterthwaite degrees
    of freedom); without s2 and n2 the second mean is taken as exact (one-sample)."""
    from scipy import stats

    v1 = s1 ** 2 / n1
    v2 = 0.0 if s2 is None or not n2 else s2 ** 2 / n2
    se = math.sqrt(v1 + v2)
    diff = m1 - m2
    if se == 0.0:
        return diff, diff
    parts = [(v1, n1)] + ([(v2, n2)] if v2 > 0 else [])
    df = (v1 + v2) ** 2 / sum(v ** 2 / (n - 1) for v, n in parts if v > 0)
    half = float(stats.t.ppf(0.5 + level / 2, df)) * se
    return diff - half, diff + half


@dataclass
class CellReport:
    row: str
    column: str
    ours: Ours
    paper: Cell
    mean: float | None = None
    std: float | None = None
    other_mean: float | None = None
    other_std: float | None = None
    diff: float | None = None
    low: float | None = None
    high: float | None = None
    verdict: str = ""


def cell_report(row: str, column: str, ours: Ours, paper: Cell) -> CellReport:
    c = CellReport(row, column, ours, paper)
    c.mean, c.std = mean_std(ours.values)
    c.other_mean, c.other_std = mean_std([v for v in ours.other if not math.isnan(v)])
    if paper.mean is None:
        c.verdict = "no paper number" if ours.n else "not run"
    elif ours.n < 2:
        c.verdict = "not run" if not ours.n else "too few seeds"
    else:
        c.diff = c.mean - paper.mean
        c.low, c.high = welch_interval(c.mean, c.std, ours.n, paper.mean, paper.std, paper.n)
        c.verdict = "consistent" if c.low <= 0.0 <= c.high else "differs"
    return c


@dataclass
class ClaimReport:
    claim: Claim
    checks: list[tuple[str, str, str, bool, float | None]]  # column, better, than, holds, p
    verdict: str


def one_sided_p(better: list[float], than: list[float], lower_is_better: bool) -> float | None:
    """Welch's one-sided p that ``better`` is better than ``than``; None under 2 seeds each."""
    if len(better) < 2 or len(than) < 2:
        return None
    from scipy import stats

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = float(stats.ttest_ind(better, than, equal_var=False,
                                  alternative="less" if lower_is_better else "greater").pvalue)
    if math.isnan(p):  # no spread on either side
        mb, mt = sum(better) / len(better), sum(than) / len(than)
        p = 0.0 if (mb < mt if lower_is_better else mb > mt) else 1.0
    return p


def claim_report(claim: Claim, cells: dict[tuple[str, str], CellReport],
                 lower_is_better: bool) -> ClaimReport:
    checks = []
    for column in claim.columns:
        a = cells[claim.better, column]
        for other in claim.than:
            b = cells[other, column]
            if a.mean is None or b.mean is None:
                checks.append((column, claim.better, other, False, None))
                continue
            holds = a.mean < b.mean if lower_is_better else a.mean > b.mean
            checks.append((column, claim.better, other, holds,
                           one_sided_p(a.ours.values, b.ours.values, lower_is_better)))
    if not checks or any(c[4] is None for c in checks):
        verdict = "not tested (a cell has fewer than 2 seeds)"
    elif not all(c[3] for c in checks):
        verdict = "fails"
    elif all(c[4] <= ALPHA for c in checks):
        verdict = "holds"
    else:
        verdict = "direction only (not significant everywhere)"
    return ClaimReport(claim, checks, verdict)


@dataclass
class Report:
    study: Study
    cells: dict[tuple[str, str], CellReport]
    claims: list[ClaimReport]
    setup_lines: list[str] = field(default_factory=list)


def build_report(study: Study, ours: dict, setup_lines: list[str] = ()) -> Report:
    cells = {(r.label, c.label): cell_report(r.label, c.label, ours.get((r.label, c.label),
                                                                         Ours()),
                                             study.cells[r.label, c.label])
             for r in study.rows for c in study.columns}
    lower = study.reports == "error"
    return Report(study, cells, [claim_report(c, cells, lower) for c in study.claims],
                  list(setup_lines))

"""Studies: a published table as a grid of runs, with the paper's set-up, cells and claims.

A study is a YAML file under ``configs/study/`` (named by its stem) or at any path. It declares
the grid (``protocol``, ``columns`` of data set and imbalance factor, ``rows`` of method and
options, ``seeds``), which of our numbers the paper's sits beside (``statistic``: the best or the
final epoch), the paper's stated set-up (``setup``: dotted config keys with the paper's value and
its words), the paper's ``cells`` exactly as printed and its ``claims`` as comparisons of rows.
``lt-bench reproduce`` trains the grid through the sweep and reports it with
``lt_bench.compare.verdict``. Light on purpose: no torch, the configs resolve only in ``jobs``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lt_bench.config import config_dir
from lt_bench.config.safe_yaml import read_yaml_file
from lt_bench.data.encoding import pixels_of
from lt_bench.errors import LtBenchError, closest

STATISTICS = ("best", "final")
REPORTS = ("error", "accuracy")
REQUIRED = ("name", "protocol", "statistic", "columns", "rows", "cells")


@dataclass
class Cell:
    """One number as a paper prints it: ``26.5 ± 0.5``, ``34.7`` (no spread) or ``-`` (none)."""

    text: str
    mean: float | None = None
    std: float | None = None
    n: int | None = None


@dataclass
class Column:
    label: str
    dataset: str
    imbalance: float


@dataclass
class Row:
    label: str
    method: str
    options: dict = field(default_factory=dict)


@dataclass
class Claim:
    text: str
    better: str
    than: list[str]
    columns: list[str]  # the labels of the columns it is about


@dataclass
class Study:
    name: str
    path: Path
    title: str
    source: str
    protocol: str
    seeds: int
    statistic: str
    reports: str  # what the paper prints: error or accuracy, in %
    setup: dict[str, dict]
    columns: list[Column]
    rows: list[Row]
    cells: dict[tuple[str, str], Cell]  # (row label, column label) → the paper's cell
    claims: list[Claim]


def study_dir() -> Path:
    return config_dir() / "study"


def study_choices() -> list[str]:
    folder = study_dir()
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def find_study(name: str) -> Path:
    """A path as given, else ``configs/study/NAME.yaml``; one line naming the choices if none."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    shipped = study_dir() / f"{name}.yaml"
    if shipped.is_file():
        return shipped
    choices = study_choices()
    raise LtBenchError(f"study {name!r} is neither a file nor a shipped study"
                       f"{closest(name, choices)}; shipped: {', '.join(choices) or 'none'}")


NUMBER = r"([0-9]+(?:\.[0-9]+)?)"


def parse_cell(text: Any, n: int | None, where: str) -> Cell:
    """The paper's cell: ``mean ± std``, ``mean`` or ``-``."""
    raw = str(text).strip()
    plain = re.sub(r"</?b>", "", raw).replace("*", "").strip()
    if plain in ("-", "—", ""):
        return Cell(raw)
    found = re.fullmatch(NUMBER + r"(?:\s*±\s*" + NUMBER + ")?", plain)
    if not found:
        raise LtBenchError(f"{where}: cell {raw!r} is not 'mean ± std', 'mean' or '-'")
    std = None if found.group(2) is None else float(found.group(2))
    return Cell(raw, float(found.group(1)), std, n)


def hint(word: str, choices: list[str]) -> str:
    """The closest choice, or all of them when none is close."""
    return closest(word, choices) or f" (choose from: {', '.join(map(str, choices))})"


_KIND = {dict: "mapping", list: "list", str: "text", int: "whole number", object: "value"}
#: a study's name names its report's folder and files: one plain path component
STUDY_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")


def _entries(raw: dict, key: str, where: str) -> list[dict]:
    """A list of mappings (columns, rows): each entry checked."""
    entries = _need(raw, key, list, where)
    for entry in entries:
        if not isinstance(entry, dict):
            raise LtBenchError(f"{where}: each of {key!r} must be a mapping (label: …), got "
                               f"{entry!r}")
    return entries


def _optional(d: dict, key: str, kind: type, where: str) -> Any:
    value = d.get(key)
    if value is not None and not isinstance(value, kind):
        raise LtBenchError(f"{where}: {key!r} must be a {_KIND.get(kind, kind.__name__)}, got "
                           f"{value!r}")
    return value


def _need(d: dict, key: str, kind: type, where: str) -> Any:
    if not isinstance(d, dict):
        raise LtBenchError(f"{where}: expected a mapping holding {key!r}, got {d!r}")
    if key not in d:
        raise LtBenchError(f"{where}: the key {key!r} is missing")
    value = d[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not object):
        what = "number" if isinstance(kind, tuple) else _KIND.get(kind, kind.__name__)
        raise LtBenchError(f"{where}: {key!r} must be a {what}, got {value!r}")
    return value


def load_study(name: str) -> Study:
    """The study ``name`` (a shipped study's name or a path), checked: every mistake is one line
    naming the file and the key."""
    path = find_study(name)
    raw = read_yaml_file(path, "study")
    if not isinstance(raw, dict):
        raise LtBenchError(f"study {path}: expected a mapping of keys, got {type(raw).__name__}")
    where = f"study {path}"
    for key in REQUIRED:
        _need(raw, key, object, where)
    if not isinstance(raw["name"], str) or not STUDY_NAME.fullmatch(raw["name"]):
        raise LtBenchError(f"{where}: name={raw['name']!r} must be one plain name (letters, "
                           "digits, '_', '-', '.'): it names the report's folder and files "
                           "under the workspace, never a path")
    for key, kind in (("setup", dict), ("claims", list)):
        if key in raw and raw[key] is not None and not isinstance(raw[key], kind):
            raise LtBenchError(f"{where}: {key!r} must be a {_KIND[kind]}, got {raw[key]!r}")
    for key in ("protocol", "title", "source"):
        if key in raw and not isinstance(raw[key], str):
            raise LtBenchError(f"{where}: {key!r} must be text, got {raw[key]!r}")
    statistic = str(raw["statistic"])
    if statistic not in STATISTICS:
        raise LtBenchError(f"{where}: statistic={statistic!r}: choose best or final")
    reports = str(raw.get("paper_reports", "error"))
    if reports not in REPORTS:
        raise LtBenchError(f"{where}: paper_reports={reports!r}: choose error or accuracy")
    columns = [Column(str(_need(c, "label", str, f"{where}: columns")),
                      str(_need(c, "dataset", str, f"{where}: columns")),
                      float(_need(c, "imbalance", (int, float), f"{where}: columns")))
               for c in _entries(raw, "columns", where)]
    rows = [Row(str(_need(r, "label", str, f"{where}: rows")),
                str(_need(r, "method", str, f"{where}: rows")),
                dict(_optional(r, "options", dict, f"{where}: rows") or {}))
            for r in _entries(raw, "rows", where)]
    for kind, labels in (("column", [c.label for c in columns]), ("row", [r.label for r in rows])):
        if len(set(labels)) != len(labels):
            raise LtBenchError(f"{where}: two {kind}s share a label: {labels}")
    cells = _cells(raw, rows, columns, where)
    claims = [_claim(c, rows, columns, where) for c in raw.get("claims") or []]
    seeds = raw.get("seeds", 3)
    if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
        raise LtBenchError(f"{where}: seeds={seeds!r}: give a count >= 1")
    for item, spec in (raw.get("setup") or {}).items():
        if not isinstance(item, str) or not isinstance(spec, dict) or "paper" not in spec:
            raise LtBenchError(f"{where}: setup {item!r} must be a mapping with the paper's "
                               f"value (paper: …, quote: …), got {spec!r}")
    return Study(str(raw["name"]), path, str(raw.get("title", raw["name"])),
                 str(raw.get("source", "")), str(raw["protocol"]), seeds, statistic, reports,
                 dict(raw.get("setup") or {}), columns, rows, cells, claims)


def _cells(raw: dict, rows: list[Row], columns: list[Column], where: str) -> dict:
    printed = _need(raw, "cells", dict, where)
    n = _paper_seeds(raw, where)
    row_seeds = {r["label"]: _paper_seeds(r, f"{where}: row {r['label']!r}", n)
                 for r in raw["rows"]}
    out = {}
    for label, values in printed.items():
        if label not in row_seeds:
            raise LtBenchError(f"{where}: cells names {label!r}, which is not a row"
                               f"{hint(str(label), list(row_seeds))}")
        if not isinstance(values, list) or len(values) != len(columns):
            raise LtBenchError(f"{where}: cells of {label!r} must list one value per column "
                               f"({len(columns)}), got {values!r}")
        for column, text in zip(columns, values):
            out[label, column.label] = parse_cell(text, row_seeds[label], f"{where}: {label}")
    for row in rows:
        for column in columns:
            out.setdefault((row.label, column.label), Cell("-"))
    return out


def _paper_seeds(d: dict, where: str, default: int | None = None) -> int | None:
    """How many runs the paper's mean ± std pools: a count of at least 2 (a std needs two)."""
    n = d.get("paper_seeds", default)
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 2):
        raise LtBenchError(f"{where}: paper_seeds={n!r}: give the paper's number of runs, a "
                           "count >= 2 (a std needs two), or leave it out")
    return n


def _claim(c: dict, rows: list[Row], columns: list[Column], where: str) -> Claim:
    if not isinstance(c, dict):
        raise LtBenchError(f"{where}: each claim must be a mapping (text, better, than, "
                           f"columns), got {c!r}")
    labels = [r.label for r in rows]
    better = str(_need(c, "better", str, f"{where}: claims"))
    than = c.get("than") or []
    than = [than] if isinstance(than, str) else than
    if not isinstance(than, list) or not all(isinstance(t, str) for t in than):
        raise LtBenchError(f"{where}: a claim's than must be a row label or a list of them, "
                           f"got {than!r}")
    for name in (better, *than):
        if name not in labels:
            raise LtBenchError(f"{where}: a claim names {name!r}, which is not a row"
                               f"{hint(str(name), labels)}")
    wanted = c.get("columns", "all")
    every = [col.label for col in columns]
    if wanted != "all" and not isinstance(wanted, list):
        raise LtBenchError(f"{where}: a claim's columns must be 'all' or a list of column "
                           f"labels, got {wanted!r}")
    chosen = every if wanted == "all" else [str(w) for w in wanted]
    for label in chosen:
        if label not in every:
            raise LtBenchError(f"{where}: a claim names the column {label!r}, which is not one"
                               f"{hint(label, every)}")
    return Claim(str(c.get("text", f"{better} beats {', '.join(than)}")), better, than, chosen)


def select(study: Study, columns: list[str] = (), rows: list[str] = ()) -> Study:
    """The study cut to the columns and rows named (none named: all of them); a claim stays
    where its rows remain, on the columns that remain."""
    for flag, wanted, every in (("column", columns, [c.label for c in study.columns]),
                                ("row", rows, [r.label for r in study.rows])):
        for label in wanted:
            if label not in every:
                raise LtBenchError(f"--{flag} {label!r} is not a {flag} of study {study.name}"
                                   f"{hint(label, every)}")
    if columns:
        study.columns = [c for c in study.columns if c.label in columns]
        for claim in study.claims:
            claim.columns = [label for label in claim.columns if label in columns]
    if rows:
        study.rows = [r for r in study.rows if r.label in rows]
        for claim in study.claims:
            claim.than = [label for label in claim.than if label in rows]
    study.claims = [c for c in study.claims if c.columns and c.than
                    and any(r.label == c.better for r in study.rows)]
    return study


def _format(value: Any) -> str:
    """A value as an override's right-hand side (JSON is YAML flow style)."""
    return value if isinstance(value, str) else json.dumps(value)


def cell_args(study: Study, row: Row, column: Column, args: list[str]) -> list[str]:
    """The sweep arguments of one cell: the study's, then what the user typed (which wins)."""
    typed = {a.partition("=")[0] for a in args if "=" in a}
    base = [f"protocol={study.protocol}", f"dataset={column.dataset}",
            f"imbalance={column.imbalance:g}", f"method={row.method}",
            *(f"method.{k}={_format(v)}" for k, v in row.options.items())]
    if not typed & {"seeds", "seed"}:
        base.append(f"seeds={study.seeds}")
    return [a for a in base if a.partition("=")[0] not in typed] + list(args)


@dataclass
class Grid:
    sweep: Any  # lt_bench.sweep.jobs.Sweep with every cell's jobs
    cells: dict[tuple[str, str], list]  # (row label, column label) → its jobs


def grid(study: Study, args: list[str], out=print, all_cells: bool = False) -> Grid:
    """Every cell's jobs, resolved, in one sweep (one plan: trunks shared across rows); a cell
    the paper leaves empty only with ``all_cells`` (there is nothing to set it beside)."""
    from lt_bench.sweep.grid import expand, unique  # here, not at the top: it imports torch

    said: set[str] = set()

    def once(line: str) -> None:
        if line not in said:
            said.add(line)
            out(line)

    first, cells, jobs, empty = None, {}, [], 0
    for row in study.rows:
        for column in study.columns:
            if study.cells[row.label, column.label].mean is None and not all_cells:
                empty += 1
                cells[row.label, column.label] = []
                continue
            sweep = expand(cell_args(study, row, column, args), once)
            first = first or sweep
            cells[row.label, column.label] = sweep.jobs
            jobs.extend(sweep.jobs)
    if first is None:
        raise LtBenchError(f"study {study.name}: the paper prints no number in any chosen cell; "
                           "choose other columns, or pass --all-cells to train them anyway")
    if empty:
        out(f"reproduce: {empty} cell(s) the paper leaves empty are not trained (--all-cells "
            "trains them)")
    first.jobs, _ = unique(jobs)
    return Grid(first, cells)


def _same(ours: Any, paper: Any) -> bool:
    if isinstance(ours, (list, tuple)) and isinstance(paper, (list, tuple)):
        return len(ours) == len(paper) and all(_same(a, b) for a, b in zip(ours, paper))
    if isinstance(ours, (int, float)) and isinstance(paper, (int, float)):
        return float(ours) == float(paper)
    return str(ours) == str(paper)


def setup_diff(study: Study, cfg: Any, seeds: int) -> tuple[list[str], int]:
    """Lines for each stated set-up item the run config departs from, and how many match."""
    from omegaconf import OmegaConf

    lines, same = [], 0
    for key, item in study.setup.items():
        paper = item.get("paper") if isinstance(item, dict) else item
        if key == "seeds":
            ours = seeds
        elif key == "pixels":
            ours = pixels_of(cfg)
        else:
            ours = OmegaConf.select(cfg, key, default="(not set)")
            ours = OmegaConf.to_container(ours) if OmegaConf.is_config(ours) else ours
        if _same(ours, paper):
            same += 1
            continue
        said = item.get("quote") if isinstance(item, dict) else None
        note = item.get("note") if isinstance(item, dict) else None
        why = (f'paper: "{said}"' if said else
               f"the authors' code: {note or ''}".rstrip(": ")
               if isinstance(item, dict) and item.get("source") == "code" else note or "paper")
        lines.append(f"{key} {_format(ours)} ≠ {_format(paper)} ({why})")
    return lines, same

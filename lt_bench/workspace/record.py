"""The run record: what one training run produced, typed, and its ``results.json``.

``train()`` returns a ``RunResult``; the CLI, the sweep, the trackers, the report and the tests
read its attributes. ``results.json`` is ``RunResult.to_dict()`` with a ``schema`` number, so a
reader can tell an older file (no ``schema``: written before this module) from a newer one.
Light on purpose (no torch): the sweep and the leaderboard import it without loading a model.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lt_bench.data.groups import thresholds_of
from lt_bench.workspace.files import (
    RunFileError,
    check_fields,
    field_hints,
    json_object,
    read_record,
    write_file,
)

SCHEMA = 1
#: above this many classes no confusion matrix is kept (C² numbers an evaluated epoch)
MAX_CONFUSION_CLASSES = 100
#: the imbalance factors of the shifted test priors (``lt_bench.run.evaluate``), as SADE reports
SHIFT_FACTORS = (50, 10, 5)
#: the shifted priors, in the order a table shows them: forward long-tailed, uniform, backward
SHIFTED = (*(f"forward{f}" for f in SHIFT_FACTORS), "uniform",
           *(f"backward{f}" for f in reversed(SHIFT_FACTORS)))


@dataclass
class Score:
    """Top-1 test accuracy at one epoch: overall, per group (None: the group has no class), per
    class, and how many classes each group holds; the expected calibration error overall and per
    group; the accuracy under shifted test priors (``SHIFTED`` names them; ``lt_bench.run.evaluate``
    says how). A file written before ECE and the priors were kept reads with None and {}."""

    epoch: int
    acc: float
    acc_many: float | None = None
    acc_medium: float | None = None
    acc_few: float | None = None
    classes_many: int = 0
    classes_medium: int = 0
    classes_few: int = 0
    per_class: list[float | None] = field(default_factory=list)  # None: no test image
    ece: float | None = None
    ece_many: float | None = None
    ece_medium: float | None = None
    ece_few: float | None = None
    shifted: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict, prefix: str = "") -> Score:
        """ValueError naming a missing field or one of the wrong type."""
        values = known(cls, d)
        check_fields(values, *field_hints(cls), prefix=prefix)
        return cls(**values)

    def without_per_class(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "per_class"}


@dataclass
class RunResult:
    """One run (one seed) of one method: identity, final and best scores, and its history."""

    status: str  # FINISHED, FAILED or KILLED
    method: str
    dataset: str
    imbalance: float | None
    backbone: str
    protocol: str
    seed: int
    cfg_hash: str = ""
    run_dir: str = ""
    run_id: str | None = None  # the tracker's id of the run (MLflow run id), if any
    classes: list[str] = field(default_factory=list)
    train_counts: list[int] = field(default_factory=list)
    group_of_class: list[str] = field(default_factory=list)
    # the thresholds group_of_class follows (eval.many_above, eval.few_below); empty in a file
    # written before they were configurable: the defaults, 100 and 20
    group_thresholds: dict[str, int] = field(default_factory=dict)
    final: Score | None = None
    best: Score | None = None
    best_chosen_on: str = "test"  # "val" when a held-out validation split chose the best epoch
    confusion: list[list[int]] | None = None  # of the final epoch
    class_weights: list[list[float]] = field(default_factory=list)  # the weights of every epoch
    history: list[dict] = field(default_factory=list)  # per-epoch metrics
    wall_time_s: float = 0.0
    precision: str = ""
    # memory format and compilation, with the figures that chose them (lt_bench.device.cpu_variant)
    variant: dict = field(default_factory=dict)
    # the data fingerprint, versions, device and selection rules (lt_bench.workspace.provenance); empty
    # in a file written before it was kept
    provenance: dict = field(default_factory=dict)
    schema: int = SCHEMA

    def score(self, which: str) -> Score | None:
        """``final`` or ``best``."""
        if which not in ("final", "best"):
            raise ValueError(f"which must be final or best, got {which!r}")
        return getattr(self, which)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RunResult:
        """Tolerant of files from older and newer lt_bench: unknown keys are ignored, missing
        optional ones take their defaults. ValueError names a missing field or one of the wrong
        type (what the readers use: a leaderboard must not meet a string for a number)."""
        values = known(cls, json_object(d))
        for which in ("final", "best"):
            if isinstance(values.get(which), dict):
                values[which] = Score.from_dict(values[which], prefix=f"{which}.")
        values.setdefault("schema", 0)
        check_fields(values, *field_hints(cls))
        return cls(**values)

    def summary(self) -> dict:
        """The record without per-class lists, weights and history: one line of a log."""
        identity = ("status", "method", "dataset", "imbalance", "backbone", "protocol", "seed",
                    "cfg_hash", "run_dir", "run_id")
        return {**{k: getattr(self, k) for k in identity},
                **{w: s.without_per_class() for w in ("final", "best")
                   if (s := self.score(w)) is not None}}

    def save(self, path: Path, root: Path | None = None) -> None:
        """Write atomically, never through a link (``lt_bench.workspace.files.write_file``; ``root``:
        the workspace, by default two levels above the run folder)."""
        write_file(path, json.dumps(self.to_dict(), indent=1, default=str), root)


def known(cls: type, d: dict) -> dict:
    """The items of ``d`` that are fields of the dataclass ``cls`` (newer files have more)."""
    return {f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d}


def read_result(path: Path) -> RunResult | None:
    """The record in ``path``; None when it is missing (a run not finished: the file is written
    atomically at the end). A file that is there but corrupt (empty, truncated, not a record, a
    field of the wrong type) raises ``RunFileError`` in one line naming it."""
    return read_record(path, RunResult.from_dict)


def finished_result(path: Path) -> RunResult | None:
    """The record of a FINISHED run; None when missing or not finished; ``RunFileError`` when
    corrupt (``train`` refuses with it; a reader of many runs uses ``finished_or_skip``)."""
    result = read_result(path)
    return result if result is not None and result.status == "FINISHED" else None


def finished_or_skip(path: Path, warn: Callable[[str], Any] | None = None) -> RunResult | None:
    """``finished_result``, where a corrupt file is one warning line and None: a reader of many
    runs (the leaderboard, its picture) goes on past one bad file."""
    try:
        return finished_result(path)
    except RunFileError as exc:
        (warn or logging.getLogger(__name__).warning)(f"{exc}; left out")
        return None


def from_history(cfg: Any, data: Any, history: list[dict], status: str, elapsed: float,
                 **identity) -> RunResult:
    """The record of a run from its per-epoch history. The best epoch is chosen on the held-out
    validation set when there is one, else on the test set as the literature reports (the final
    epoch is then the honest primary number); ``best_chosen_on`` says which."""
    scored = [h for h in history if "test/acc" in h]
    chosen_on = "val" if all("val/acc" in h for h in scored) else "test"
    final, best = scored[-1], max(scored, key=lambda h: h[f"{chosen_on}/acc"])

    def pick(h: dict) -> Score:  # the run's own numbers: checked when read back, not here
        test = {k.removeprefix("test/"): v for k, v in h.items() if k.startswith("test/")}
        shifted = {name: test[f"shifted_{name}"] for name in SHIFTED if f"shifted_{name}" in test}
        return Score(**known(Score, {**test, "epoch": h["epoch"], "per_class": h["per_class"],
                                     "shifted": shifted}))

    return RunResult(
        status=status, method=cfg.method.name, dataset=cfg.dataset, imbalance=cfg.imbalance,
        backbone=cfg.backbone.name, protocol=cfg.protocol.name, seed=cfg.seed,
        classes=[str(c) for c in data.classes], train_counts=list(data.train_counts),
        group_thresholds=thresholds_of(cfg.get("eval")), final=pick(final), best=pick(best),
        best_chosen_on=chosen_on,
        confusion=final.get("confusion"),
        class_weights=[h["class_weights"] for h in history],
        history=[{k: v for k, v in h.items()
                  if k not in ("class_weights", "per_class", "confusion")} for h in history],
        wall_time_s=elapsed, **identity)

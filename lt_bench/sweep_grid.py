"""The grid of a sweep, cleaned before it runs (``lt_bench.sweep.expand``): a method option goes
to the methods that take it, and a run that repeats another's folder is dropped; each said in
one line."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from lt_bench.errors import LtBenchError, closest

if TYPE_CHECKING:
    from lt_bench.sweep import Job


def _method_option(item: str) -> str | None:
    """The option a ``method.X=V`` argument sets (X); None for any other argument."""
    key = item.partition("=")[0].strip()
    if key.startswith("method.") and key != "method.name":
        return key[len("method."):].split(".")[0]
    return None


def for_its_method(paths: list[str], overrides: list[str], takers: dict) -> list[str]:
    """``overrides`` less the method options that the method they select does not take (a
    sweep's ``method.beta=0.5`` is for the methods of the grid that have a beta); ``takers``
    records, per option, its arguments, the methods that take it and those that do not."""
    from lt_bench.config import load_config
    from lt_bench.config_method import options_taken

    if not any(_method_option(o) for o in overrides):
        return overrides
    cfg = load_config(paths, overrides, [])  # which method; what it drops is said per job
    name = str(cfg.method.name)
    taken = options_taken(name, cfg.method.get("loss"), cfg.get("plugins"))
    kept = []
    for item in overrides:
        option = _method_option(item)
        takes = option is None or taken is None or option in taken
        if option is not None:
            record = takers.setdefault(option, {"items": {}, "yes": {}, "no": {},
                                                "known": set()})
            record["items"][item] = None
            record["yes" if takes else "no"][name] = None
            record["known"] |= taken or set()
        if takes:
            kept.append(item)
    return kept


def takers_lines(takers: dict) -> list[str]:
    """A line for each method option that some methods of the grid run without; refused when
    no method of the grid takes it."""
    lines = []
    for option, record in takers.items():
        items, no = [i.partition("=") for i in record["items"]], ", ".join(record["no"])
        typed = (f"{items[0][0]}={items[0][2]}" if len(items) == 1
                 else f"{items[0][0]}=[{','.join(i[2] for i in items)}]")
        if not record["no"]:
            continue
        if not record["yes"]:
            raise LtBenchError(f"sweep: {typed}: no method of the sweep ({no}) has option "
                               f"{option!r}{closest(option, record['known'])}")
        lines.append(f"{typed} applies to {', '.join(record['yes'])}; {no} "
                     f"{'has' if len(record['no']) == 1 else 'have'} no option {option!r}")
    return lines


def unique(jobs: list[Job]) -> tuple[list[Job], list[str]]:
    """The jobs less those that repeat an earlier one's run folder (same method, config hash and
    seed: ``seeds=[0,0]``, ``methods=[ce,ce]``), which would wait on each other; a line on them."""
    seen: set[Path] = set()
    kept, dropped = [], []
    for job in jobs:
        (dropped if job.run_dir in seen else kept).append(job)
        seen.add(job.run_dir)
    if not dropped:
        return kept, []
    times = Counter(j.label for j in dropped)  # in order of first appearance
    shown = ", ".join(label + (f" (x{n})" if n > 1 else "") for label, n in list(times.items())[:5])
    shown += ", …" if len(times) > 5 else ""
    return kept, [f"dropped {len(dropped)} duplicate run(s): {shown} (the same method, config "
                  "and seed as a run before)"]

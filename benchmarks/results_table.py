"""The tables of docs/RESULTS.md: the leaderboard as top-1 ERROR %, beside Zheng & Ng's Table 1.

    python benchmarks/results_table.py [workspace=workspace/evidence] [protocol=quick]

Reads the workspace's MLflow store through ``lt_bench.leaderboard`` (the same rows as
``lt-bench leaderboard``) and prints, per imbalance factor, one markdown table: final-epoch and
best-epoch error (mean ± sample std over seeds), the seeds, Welch's and Mann–Whitney's p-values of
the final accuracy against ``ce``, the many/medium/few-shot final accuracy, and the paper's error
(30 seeds, 200 epochs, best epoch) where it reports one. Two rows of one method (``dv`` with
``convention=paper`` and ``authors``) are labelled by the method options that tell them apart,
read from the run folders' config.yaml.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

from omegaconf import OmegaConf

from lt_bench.api import method_options
from lt_bench.config import config_hash, load_config
from lt_bench.leaderboard import leaderboard

#: Zheng & Ng, Table 1 (ResNet-32, CIFAR-10-LT, error %, mean ± std over 30 seeds)
PAPER = {
    100.0: {"ce": "26.5 ± 0.5", "effective_number": "27.3 ± 2.6", "dv": "20.8 ± 0.3",
            "dv (authors)": "20.8 ± 0.3"},
    200.0: {"ce": "39.9 ± 2.1", "effective_number": "37.7 ± 2.1", "dv": "27.3 ± 1.4"},
}
ORDER = ("ce", "effective_number", "focal", "dv", "dv (paper)", "dv (authors)", "pv", "bv",
         "ib", "ldam_drw", "vs", "lade", "da", "da_dv", "meta_weight_net")


def labels(workspace: str) -> dict[str, str]:
    """config hash → the method's name, with the options that differ between runs of it."""
    options: dict[str, dict] = {}
    for path in Path(workspace).glob("runs/*/config.yaml"):
        cfg = OmegaConf.load(path)
        options[config_hash(cfg)] = OmegaConf.to_container(cfg.method)
    by_name = defaultdict(list)
    for h, opts in options.items():
        by_name[opts["name"]].append(h)
    out = {}
    for name, hashes in by_name.items():
        differ = sorted({k for h in hashes for k in options[h] if k != "name"
                         and len({str(options[g].get(k)) for g in hashes}) > 1})
        defaults = method_options(name)
        for h in hashes:
            extra = ", ".join(str(options[h].get(k, defaults.get(k))) for k in differ)
            out[h] = f"{name} ({extra})" if extra else name
    return out


def error(mean: float | None, std: float | None = None) -> str:
    if mean is None:
        return "n/a"
    return f"{100 * (1 - mean):.1f}" + ("" if std is None else f" ± {100 * std:.1f}")


def pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}"


def p_value(v: float | None, note: str) -> str:
    if v is None:
        return "—" if note == "baseline" else note
    return f"{v:.2g}" if v >= 1e-3 else f"{v:.0e}"


def main(argv: list[str]) -> None:
    filters = {"dataset": "cifar10_lt", "protocol": "quick"}
    overrides = ["workspace=workspace/evidence"]
    for item in argv:
        key = item.partition("=")[0]
        (filters.__setitem__(key, item.partition("=")[2]) if key in ("dataset", "protocol")
         else overrides.append(item))
    cfg = load_config([], overrides)
    names = labels(cfg.workspace)
    final = leaderboard(cfg, filters, metric="final")
    best = {(r.imbalance, r.method, r.cfg_hash): r for r in leaderboard(cfg, filters, "best")}
    for imbalance in sorted({float(r.imbalance) for r in final}):
        def label(r):
            return names.get(r.cfg_hash, r.method)

        rows = sorted((r for r in final if float(r.imbalance) == imbalance),
                      key=lambda r: ORDER.index(label(r)) if label(r) in ORDER else len(ORDER))
        print(f"\n**CIFAR-10-LT, imbalance {imbalance:g}** (error %, lower is better)\n")
        print("| method | final error | best-epoch error | seeds | p vs ce (Welch) | "
              "p vs ce (Mann–Whitney) | many acc | medium acc | few acc | paper (best epoch) |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            b = best.get((r.imbalance, r.method, r.cfg_hash))
            print(f"| {label(r)} | {error(r.mean, r.std)} | "
                  f"{error(b.mean, b.std) if b else 'n/a'} | {r.n} | "
                  f"{p_value(r.p_value, r.test_note)} | {p_value(r.p_value_mwu, r.test_note)} | "
                  f"{pct(r.acc_many)} | {pct(r.acc_medium)} | {pct(r.acc_few)} | "
                  f"{PAPER.get(imbalance, {}).get(label(r), '—')} |")


if __name__ == "__main__":
    main(sys.argv[1:])

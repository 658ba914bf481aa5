"""How long `lt-bench leaderboard` takes on a store of N synthetic finished seed runs.

    python benchmarks/leaderboard.py            # 2,000 runs in a temporary workspace
    python benchmarks/leaderboard.py --runs 5000 --workspace /tmp/lb --keep

The runs are created the way the MLflow tracker creates them (tags, ~60 params, final/best
metrics, a parent group run per method and setting), logged in bulk with ``log_batch``:
4 settings x 10 methods x N/40 seeds. It then times the leaderboard twice: in-process
(reading the store + statistics), and the command end to end (``lt-bench leaderboard``,
Python start-up included).
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow.entities import Metric, Param, RunTag

from lt_bench.compare.leaderboard import format_text, leaderboard
from lt_bench.tracking.store import client, ensure_experiment, tracking_uri

METHODS = ["ce", "dv", "cb", "ldam", "focal", "ldam_drw", "bs", "ls", "ib", "vs"]
SETTINGS = [("cifar10_lt", 100), ("cifar10_lt", 50), ("cifar100_lt", 100), ("cifar100_lt", 10)]


def populate(workspace: Path, runs: int) -> float:
    cfg = {"workspace": str(workspace)}
    uri = tracking_uri(cfg)
    c = client(uri)
    seeds = max(1, runs // (len(SETTINGS) * len(METHODS)))
    rng = random.Random(0)
    started = time.perf_counter()
    now = int(time.time() * 1000)
    for dataset, imbalance in SETTINGS:
        exp = ensure_experiment(c, f"{dataset}-IF{imbalance}-resnet32",
                                (workspace / "mlartifacts").as_uri(), uri)
        for m, method in enumerate(METHODS):
            cfg_hash = f"{abs(hash((dataset, imbalance, method))) % 10**10:010d}"
            tags = {"lt.method": method, "lt.dataset": dataset, "lt.imbalance": str(imbalance),
                    "lt.backbone": "resnet32", "lt.protocol": "paper_cifar",
                    "lt.cfg_hash": cfg_hash}
            group = c.create_run(exp, run_name=f"{method}-{cfg_hash}",
                                 tags={**tags, "lt.role": "group"}).info.run_id
            params = [Param(f"option.{i}", str(rng.random())) for i in range(60)]
            for seed in range(seeds):
                run = c.create_run(exp, run_name=f"{method}-seed{seed}", start_time=now,
                                   tags={**tags, "lt.role": "seed", "lt.seed": str(seed),
                                         "mlflow.parentRunId": group})
                acc = 0.70 + 0.004 * m + rng.gauss(0, 0.01)
                metrics = [Metric(f"{w}/{k}", acc + d + (0.01 if w == "best" else 0), now, 0)
                           for w in ("final", "best")
                           for k, d in (("acc", 0), ("acc_many", 0.2), ("acc_medium", -0.1),
                                        ("acc_few", -0.3))]
                c.log_batch(run.info.run_id, metrics=metrics, params=params,
                            tags=[RunTag("mlflow.runName", f"{method}-seed{seed}")])
                c.set_terminated(run.info.run_id, "FINISHED")
            c.set_terminated(group, "FINISHED")
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--workspace", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the temporary workspace")
    args = parser.parse_args()
    tmp = None
    if args.workspace is None:
        tmp = tempfile.TemporaryDirectory(prefix="lt-bench-lb-")
        args.workspace = Path(tmp.name)
    ws = args.workspace.resolve()
    cfg = {"workspace": str(ws)}
    if not (ws / "mlflow.db").exists():
        print(f"creating {args.runs} finished runs in {ws} ...", flush=True)
        print(f"  populated in {populate(ws, args.runs):.1f} s")
    client(tracking_uri(cfg))  # the store is opened once, as the command does
    started = time.perf_counter()
    rows = leaderboard(cfg)
    in_process = time.perf_counter() - started
    runs = sum(r.n for r in rows)
    print(format_text([r for r in rows if r.dataset == "cifar10_lt" and r.imbalance == "100"]))
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "lt_bench", "leaderboard", f"workspace={ws}",
                    "--csv"], check=True, stdout=subprocess.DEVNULL)
    command = time.perf_counter() - started
    print(f"\nleaderboard over {runs} runs ({len(rows)} rows): {in_process:.2f} s in-process "
          f"(read + statistics), {command:.2f} s for the `lt-bench leaderboard` command "
          "(Python and MLflow start-up included)")
    if args.keep and tmp is not None:
        tmp._finalizer.detach()  # noqa: SLF001 - keep the folder
        print(f"kept {ws}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Epoch time of the whole harness (data pipeline, method, evaluation) for a few run settings.

    python benchmarks/harness_epochs.py OUT.json [--epochs 6] [--data-root DIR] [--smoke]
        [--variant 'NAME: key=value ...']...

Each variant is one ``lt_bench train`` process (paper_cifar shape, CIFAR-10-LT IF 100 when
--data-root holds it, else ``synthetic_lt``), run one after the other. It reports the median of
the per-epoch ``time/train_s`` and ``time/epoch_s`` over the epochs after the first (the first
pays cuDNN autotuning and compilation), the process's wall time and the final accuracy. The
model-only step time of benchmarks/device_check/ is the floor; this shows what the harness
adds on top of it, and whether a setting (compile with CUDA graphs) survives the real loop.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_VARIANTS = [
    "dv eager: method=dv",
    "dv reduce-overhead: method=dv compile=true compile_mode=reduce-overhead",
    "ce eager: method=ce",
    "dv eager deterministic: method=dv deterministic=true",
]


def run(name: str, overrides: list[str], common: list[str], work: Path, env: dict) -> dict:
    ws = work / name.replace(" ", "_")
    cmd = [sys.executable, "-m", "lt_bench", "train", *common, *overrides, f"workspace={ws}",
           "tracking.tracker=local", "quiet=true"]
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=work, capture_output=True, text=True)
    out = {"variant": name, "overrides": overrides, "exit": proc.returncode,
           "wall_s": round(time.perf_counter() - started, 2)}
    found = list(ws.glob("runs/*/results.json"))
    if proc.returncode or not found:
        out["error"] = (proc.stderr or proc.stdout)[-1500:]
        return out
    results = json.loads(found[0].read_text())
    later = results["history"][1:] or results["history"]
    for key in ("time/train_s", "time/epoch_s"):
        out[key.replace("time/", "median_")] = statistics.median(h[key] for h in later)
    out["first_epoch_s"] = results["history"][0]["time/epoch_s"]
    out["final_acc"] = results["final"]["acc"]
    out["precision"] = results.get("precision")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--data-root")
    parser.add_argument("--smoke", action="store_true", help="tiny synthetic data, 2 epochs")
    parser.add_argument("--variant", action="append", help="'NAME: key=value ...'")
    args = parser.parse_args()
    root = Path(args.data_root).resolve() if args.data_root else None
    if root and (root / "cifar10-jpeg.tar.gz").is_file() and not args.smoke:
        data = ["dataset=cifar10_lt", "imbalance=100", f"data.root={root}"]
    else:
        data = ["dataset=synthetic_lt", "imbalance=10"]
    epochs = 2 if args.smoke else args.epochs
    common = [*data, "protocol=paper_cifar", f"protocol.epochs={epochs}",
              "protocol.start_epoch=0", "data.progress=false"]
    variants = args.variant or DEFAULT_VARIANTS
    work = Path(tempfile.mkdtemp(prefix="harness_epochs_"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "LT_BENCH_CACHE": os.environ.get("LT_BENCH_CACHE") or str(work / "cache")}
    rows = []
    for spec in variants:
        name, _, rest = spec.partition(":")
        if args.smoke:
            rest = rest.replace("compile_mode=reduce-overhead", "")  # CUDA graphs: CUDA only
        rows.append(run(name.strip(), rest.split(), common, work, env))
        print(json.dumps(rows[-1]), flush=True)
        args.out.write_text(json.dumps({"common": common, "rows": rows}, indent=1))
    return 0 if all(r["exit"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

"""What the fork at the re-weighting start saves: one sweep with it, the same sweep without.

    python benchmarks/fork_saving.py OUT.json [--data-root DIR] [--protocol quick]
        [--methods ce,effective_number,dv] [--seeds 1] [--jobs 2] [--smoke]

Runs ``lt-bench sweep`` twice in fresh workspaces (``fork=true``, then ``fork=false``) on
CIFAR-10-LT IF 100 (``synthetic_lt`` with --smoke or without the archive), and reports each
sweep's wall time, the epochs each trained (from its own "fork:" line and the protocol), and
whether the two give the same final accuracies (they should: a branch is the run trained alone;
bit-identical only with deterministic=true, which this benchmark leaves off for speed). It also
computes the saving for the paper's protocol (200 epochs, re-weighting from epoch 160).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def sweep(args: list[str], workspace: Path) -> dict:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "lt_bench", "sweep", *args,
                           f"workspace={workspace}", "tracking.tracker=local"],
                          capture_output=True, text=True, env={**os.environ, "TERM": "dumb"})
    out = {"exit": proc.returncode, "wall_s": round(time.perf_counter() - started, 1)}
    if proc.returncode:
        out["error"] = (proc.stderr or proc.stdout)[-1500:]
    fork_line = next((ln for ln in proc.stdout.splitlines() if "fork:" in ln), "")
    if m := re.search(r"(\d+) epochs to train instead of (\d+)", fork_line):
        out["epochs"], out["epochs_without_fork"] = int(m[1]), int(m[2])
    out["final_acc"] = {}
    for path in sorted(workspace.glob("runs/*/results.json")):
        r = json.loads(path.read_text())
        out["final_acc"][f"{r['method']} seed {r['seed']}"] = r["final"]["acc"]
    return out


def paper_saving(methods: int, seeds: int, start: int = 160, epochs: int = 200) -> dict:
    # class volume gathers its first statistics in the epoch before its start: the trunk stops
    # one epoch earlier than the start when dv, pv or bv are in the comparison
    trunk = start - 1
    alone = methods * seeds * epochs
    with_fork = seeds * (trunk + methods * (epochs - trunk))
    return {"methods": methods, "seeds": seeds, "epochs_alone": alone,
            "epochs_with_fork": with_fork, "ratio": round(alone / with_fork, 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--data-root", default="../shared/data")
    ap.add_argument("--protocol", default="quick")
    ap.add_argument("--methods", default="ce,effective_number,dv")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--smoke", action="store_true", help="synthetic_lt, 3 epochs: seconds")
    a = ap.parse_args()
    real = not a.smoke and (Path(a.data_root) / "cifar10-jpeg.tar.gz").is_file()
    data = ([f"data.root={a.data_root}", "dataset=cifar10_lt", "imbalance=100"] if real
            else ["dataset=synthetic_lt", "imbalance=20"])
    protocol = [f"protocol={a.protocol}"] + ([] if real and not a.smoke else [
        "protocol.epochs=3", "protocol.start_epoch=2", "protocol.milestones=[2]"])
    args = [*data, *protocol, f"methods=[{a.methods}]", f"seeds={a.seeds}", f"jobs={a.jobs}"]
    report = {"args": args, "cpu": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="fork-saving-") as tmp:
        report["fork"] = sweep(args, Path(tmp) / "fork")
        report["no_fork"] = sweep([*args, "fork=false"], Path(tmp) / "alone")
    if report["fork"].get("wall_s") and report["no_fork"].get("wall_s"):
        report["wall_ratio"] = round(report["no_fork"]["wall_s"] / report["fork"]["wall_s"], 2)
    report["paper_protocol"] = paper_saving(len(a.methods.split(",")), max(a.seeds, 1))
    report["paper_protocol_6x5"] = paper_saving(6, 5)
    a.out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0 if report["fork"]["exit"] == report["no_fork"]["exit"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())

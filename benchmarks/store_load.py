"""Many runs logging to one tracking store at once: does every metric arrive?

    python benchmarks/store_load.py OUT.json [--runs 16] [--epochs 20] [--server]

Starts ``--runs`` processes together, each one MLflow-tracked run (``MlflowTracker``: start,
``--epochs`` epochs of 5 metrics, finish with a run record), all into one fresh store: the
workspace's SQLite file, or with ``--server`` a local ``mlflow server`` over SQLite (artifacts
proxied). Then reads the store back and reports runs expected/found, metric values written/
found (per-epoch histories and the final summary), each process's store-call retries (SQLite
"database is locked"; over HTTP, MLflow's own retries are not counted here) and wall times.
tests/test_tracking_store_load.py runs it at the issue's size (16 runs) and asserts nothing is lost.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

KEYS = ("train/loss", "lr", "test/acc", "test/acc_many", "time/epoch_s")

WORKER = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from omegaconf import OmegaConf
    from lt_bench.workspace.record import RunResult, Score
    from lt_bench.tracking import store
    from lt_bench.tracking.mlflow_tracker import MlflowTracker

    ws, uri, seed, epochs = sys.argv[1], sys.argv[2] or None, int(sys.argv[3]), int(sys.argv[4])
    cfg = {"dataset": "cifar10_lt", "imbalance": 100.0, "backbone": {"name": "resnet32"},
           "method": {"name": "dv" if seed % 2 else "ce"}, "protocol": {"name": "quick"},
           "seed": seed, "workspace": ws,
           "tracking": {"tracker": "mlflow", "uri": uri, "experiment": None}}
    tracker = MlflowTracker(OmegaConf.create(cfg))
    tracker.start(cfg, Path(ws) / "runs" / f"r{seed}", {})
    for epoch in range(epochs):
        tracker.log_metrics({k: seed + epoch / 100 + i for i, k in enumerate(KEYS)}, epoch)
    score = Score(epoch=epochs - 1, acc=0.5 + seed / 1000)
    tracker.finish(RunResult("FINISHED", cfg["method"]["name"], "cifar10_lt", 100.0, "resnet32",
                             "quick", seed, final=score, best=score), status="FINISHED")
    print(json.dumps({"retries": store.retries_done}))
""").replace("KEYS", repr(KEYS))


def load(workspace: Path, uri: str | None, runs: int, epochs: int) -> dict:
    """Run the ``runs`` processes into ``uri`` (None: the workspace's SQLite file); count."""
    from lt_bench.tracking.store import client, prepare_store, tracking_uri

    started = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(workspace), uri or "", str(s),
                               str(epochs)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for s in range(runs)]
    outputs = [p.communicate(timeout=600) for p in procs]
    wall = time.perf_counter() - started
    failed = [err[-1500:] for p, (_, err) in zip(procs, outputs) if p.returncode]
    retries = sum(json.loads(out.strip().splitlines()[-1])["retries"]
                  for p, (out, _) in zip(procs, outputs) if p.returncode == 0)
    cfg = {"workspace": str(workspace), "dataset": "cifar10_lt", "imbalance": 100.0,
           "backbone": {"name": "resnet32"}, "tracking": {"uri": uri}}
    store_uri, exp_id = prepare_store(cfg)
    c = client(tracking_uri(cfg))
    seeds = c.search_runs([exp_id], "tags.`lt.role` = 'seed'", max_results=1000)
    found = sum(len(c.get_metric_history(r.info.run_id, k)) for r in seeds for k in KEYS)
    summary = sum("final/acc" in r.data.metrics for r in seeds)
    return {"store": store_uri, "runs": runs, "epochs": epochs, "runs_found": len(seeds),
            "finished": sum(r.info.status == "FINISHED" for r in seeds),
            "epoch_metrics_written": runs * epochs * len(KEYS), "epoch_metrics_found": found,
            "summaries_found": summary, "retries": retries, "failed_processes": failed,
            "wall_s": round(wall, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--runs", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--server", action="store_true", help="through a local mlflow server")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="store-load-") as tmp:
        ws = Path(tmp) / "ws"
        if a.server:
            sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
            from test_tracking_server import Server, free_port

            (Path(tmp) / "server").mkdir()
            srv = Server(Path(tmp) / "server", free_port())
            srv.start()
            try:
                report = load(ws, srv.uri, a.runs, a.epochs)
            finally:
                srv.stop()
        else:
            report = load(ws, None, a.runs, a.epochs)
    a.out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0 if report["epoch_metrics_found"] == report["epoch_metrics_written"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

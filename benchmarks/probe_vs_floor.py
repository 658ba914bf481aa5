"""The run's own probe against the benchmark's floor, and a fresh process against a trained one,
measured in turns so that the machine's drift falls on both sides alike.

    python benchmarks/probe_vs_floor.py [--root ../shared/data] [--epochs 5] [--rounds 4]

Two worker processes start side by side and take turns, never running at once:
- **fresh** builds ResNet-32 and does nothing else;
- **trained** runs ``lt-bench train dataset=cifar10_lt imbalance=100`` in its own process, as a
  user runs it, with an empty variant cache, so that the run probes (its figures are what the
  run printed on its ``variant:`` line).
Both then time the floor (``cpu_speed``'s: the same ``cpu_variant.time_variant`` the probe uses,
bf16 or fp32 as the CPU runs natively, at the variant the run chose) in alternate turns: before
the run (fresh only, around the run's probe), after it, and after ``gc.collect()`` in the trained
process. Both keep freed memory as a run does (``lt_bench.device.cpu_memory``; ``--as-is``
leaves glibc's malloc as it is in the fresh worker). Each turn also reads the worker's torch
thread count, resident memory, OS threads and the minor page faults of the floor, the suspects
of a slower trained process. Run it on an idle machine; it prints the CPU and a Markdown table.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
from pathlib import Path

from lt_bench.device.cpu_threads import own_stat

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))


def process_state() -> dict:
    """Torch threads, resident MiB, OS threads and minor page faults so far of this process."""
    import torch

    status = Path("/proc/self/status").read_text() if Path("/proc/self/status").exists() else ""
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss = int(fields.get("VmRSS", "0 kB").split()[0]) / 1024
    stat = own_stat()  # minflt, the 10th field: a page the allocator got anew (zeroed)
    minflt = int(stat[7]) if stat else 0
    return {"torch_threads": torch.get_num_threads(), "rss_mib": rss,
            "os_threads": int(fields.get("Threads", "0").strip() or 0), "minflt": minflt}


def worker(conn, role: str, args: list[str], workspace: str, keep: bool) -> None:
    """Answer the driver's commands: train, floor, gc, stop (module docstring)."""
    import torch
    from cpu_speed import floor_workload  # beside this script

    from lt_bench.backbones import build_backbone
    from lt_bench.device import cpu_variant
    from lt_bench.device.cpu_memory import keep_freed_memory
    from lt_bench.device.defaults import native_bf16

    if keep:
        keep_freed_memory()
    cpu_variant.TIMED_STEPS = 10
    precision = "bf16" if native_bf16(torch.device("cpu"))[0] else "fp32"
    model = build_backbone("resnet32", 10)
    channels_last, result = True, None
    conn.send("ready")
    while (cmd := conn.recv()) != "stop":
        if cmd == "train":
            from lt_bench.cli import main

            assert main(["train", *args, f"workspace={workspace}", "quiet=true",
                         "tracking.tracker=local"]) == 0
            [found] = Path(workspace).glob("runs/*/results.json")
            result = json.loads(found.read_text())
            channels_last = bool(result["variant"].get("channels_last"))
            conn.send({"variant": result["variant"], "precision": result["precision"],
                       "epochs": [h["time/epoch_s"] for h in result["history"]]})
        elif cmd == "floor":
            workload, autocast = floor_workload(precision)
            faults = process_state()["minflt"]
            f = cpu_variant.time_variant(model, workload, autocast, channels_last, False, None)
            state = process_state()
            conn.send({**f, **state, "faults": state["minflt"] - faults})
        elif cmd == "gc":
            conn.send({"collected": gc.collect()})
        elif cmd == "state":
            conn.send(process_state())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=str(REPO / "../shared/data"))
    parser.add_argument("--epochs", type=int, default=5, help="epochs of the run (5: it probes)")
    parser.add_argument("--rounds", type=int, default=4, help="turns of each worker per phase")
    parser.add_argument("--as-is", action="store_true",
                        help="leave malloc as it is in the fresh worker (a run keeps freed memory)")
    a = parser.parse_args()

    import torch
    from cpu_speed import TEST_IMAGES, TRAIN_IMAGES

    from lt_bench.workspace.provenance import cpu_model

    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        cache.mkdir()
        home = Path(os.environ.get("LT_BENCH_CACHE") or "~/.cache/lt_bench").expanduser()
        for data in home.glob("*.pt"):  # the decoded data sets, not the variant cache
            (cache / data.name).symlink_to(data)
        os.environ["LT_BENCH_CACHE"] = str(cache)  # inherited by the spawned workers
        args = ["dataset=cifar10_lt", "imbalance=100", f"data.root={Path(a.root).resolve()}",
                f"protocol.epochs={a.epochs}"]
        pipes, procs = {}, []
        for role in ("fresh", "trained"):
            here, there = ctx.Pipe()
            p = ctx.Process(target=worker, args=(there, role, args, str(Path(tmp) / role),
                                                         role == "trained" or not a.as_is))
            p.start()
            procs.append(p)
            pipes[role] = here
            assert here.recv() == "ready"

        def ask(role: str, cmd: str) -> dict:
            pipes[role].send(cmd)
            return pipes[role].recv()

        rows: list[tuple[str, str, dict]] = []

        def turns(phase: str, roles: tuple[str, ...]) -> None:
            for i in range(a.rounds):
                for role in roles:
                    f = ask(role, "floor")
                    rows.append((phase, role, f))
                    print(f"{phase} {i + 1}: {role} {f['train_img_s']:.0f} train / "
                          f"{f['eval_img_s']:.0f} eval img/s, {f['torch_threads']} torch threads, "
                          f"{f['rss_mib']:.0f} MiB, {f['os_threads']} OS threads, "
                          f"{f['faults']:,} page faults", flush=True)

        print(f"CPU: {cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}",
              flush=True)
        turns("before the run", ("fresh",))
        run = ask("trained", "train")
        print(f"the run: {run['variant'].get('label')} ({run['variant'].get('how')}), epochs "
              + ", ".join(f"{s:.1f}" for s in run["epochs"]) + " s", flush=True)
        turns("after the run", ("fresh",))
        turns("trained", ("fresh", "trained"))
        print(f"gc.collect() in the trained worker: {ask('trained', 'gc')}", flush=True)
        turns("after gc.collect()", ("fresh", "trained"))
        for role in pipes:
            pipes[role].send("stop")
        for p in procs:
            p.join()

    probe = run["variant"].get("figures", {}).get(run["variant"].get("label"), {})
    print("\n| phase | worker | train img/s (median, range) | eval img/s (median, range) | "
          "torch threads | RSS MiB | page faults a floor |")
    print("|---|---|---:|---:|---:|---:|---:|")
    seen = []
    for phase, role, _ in rows:
        if (phase, role) in seen:
            continue
        seen.append((phase, role))
        fs = [f for p, r, f in rows if (p, r) == (phase, role)]
        tr = [f["train_img_s"] for f in fs]
        ev = [f["eval_img_s"] for f in fs]
        print(f"| {phase} | {role} | {statistics.median(tr):,.0f} ({min(tr):,.0f}–{max(tr):,.0f}) "
              f"| {statistics.median(ev):,.0f} ({min(ev):,.0f}–{max(ev):,.0f}) | "
              f"{fs[-1]['torch_threads']} | {fs[-1]['rss_mib']:,.0f} | "
              f"{statistics.median(f['faults'] for f in fs):,.0f} |")
    if probe:
        around = [f for p, r, f in rows if p in ("before the run", "after the run")]
        tr = statistics.median(f["train_img_s"] for f in around)
        ev = statistics.median(f["eval_img_s"] for f in around)
        print(f"\nthe run's probe ({run['variant'].get('label')}): {probe['train_img_s']:,.0f} "
              f"train / {probe.get('eval_img_s') or 0:,.0f} eval img/s; the fresh floor around "
              f"it: {tr:,.0f} / {ev:,.0f} ({probe['train_img_s'] / tr - 1:+.0%}, "
              f"{(probe.get('eval_img_s') or 0) / ev - 1:+.0%})")
        floor_epoch = TRAIN_IMAGES / tr + TEST_IMAGES / ev
        epoch = statistics.median(run["epochs"][1:] or run["epochs"])
        print(f"the run's epoch (median after the first): {epoch:.1f} s against the floor's "
              f"{floor_epoch:.1f} s around it: {floor_epoch / epoch:.2f} of the floor's speed")


if __name__ == "__main__":
    main()

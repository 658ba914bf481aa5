"""ResNet-32's floor under four ways of handling freed memory, in turns, so drift falls on all alike.

    python benchmarks/cpu_allocator.py [--rounds 5] [default thp keep thp+keep]

One worker process per setting, each timing ``cpu_speed``'s floor (bf16 where the CPU runs it
natively, else fp32; channels_last; ``cpu_variant.time_variant``) in turn, never two at once:
- **default**: glibc's malloc as it is;
- **thp**: ``THP_MEM_ALLOC_ENABLE=1``, PyTorch's own switch to ask for transparent huge pages
  on blocks of 2 MiB and more (one fault a 2 MiB page instead of one a 4 KiB page);
- **keep**: ``lt_bench.device.cpu_memory.keep_freed_memory`` (what a CPU run does);
- **thp+keep**: both.
Each turn reports training and scoring images/s, the worker's minor page faults during the floor,
and its resident memory. Run it on an idle machine; it prints a Markdown table.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from probe_vs_floor import process_state  # noqa: E402 - beside this script

SETTINGS = ("default", "thp", "keep", "thp+keep")


def worker(conn, setting: str) -> None:
    if "thp" in setting:  # read by PyTorch at its first allocation: before torch is imported
        os.environ["THP_MEM_ALLOC_ENABLE"] = "1"
    import torch
    from cpu_speed import floor_workload  # beside this script

    from lt_bench.backbones import build_backbone
    from lt_bench.device import cpu_variant
    from lt_bench.device.cpu_memory import keep_freed_memory
    from lt_bench.device.defaults import native_bf16

    if "keep" in setting:
        keep_freed_memory()
    cpu_variant.TIMED_STEPS = 10
    precision = "bf16" if native_bf16(torch.device("cpu"))[0] else "fp32"
    model = build_backbone("resnet32", 10)
    conn.send("ready")
    while conn.recv() == "floor":
        workload, autocast = floor_workload(precision)
        before = process_state()["minflt"]
        f = cpu_variant.time_variant(model, workload, autocast, True, False, None)
        after = process_state()
        conn.send((f["train_img_s"], f["eval_img_s"], after["minflt"] - before,
                   round(after["rss_mib"])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="floors of each setting")
    parser.add_argument("settings", nargs="*", choices=SETTINGS, help="default: all four")
    a = parser.parse_args()
    from lt_bench.workspace.provenance import cpu_model

    settings = a.settings or list(SETTINGS)
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores", flush=True)
    ctx = mp.get_context("spawn")
    pipes, results = {}, {s: [] for s in settings}
    for s in settings:
        here, there = ctx.Pipe()
        ctx.Process(target=worker, args=(there, s), daemon=True).start()
        assert here.recv() == "ready"
        pipes[s] = here
    for i in range(a.rounds):
        for s in settings:
            pipes[s].send("floor")
            results[s].append(pipes[s].recv())
            print(f"{i + 1} {s}: %.0f train / %.0f eval img/s, %d page faults, %d MiB"
                  % results[s][-1], flush=True)
    for s in settings:
        pipes[s].send("stop")
    print("\n| malloc | train img/s (median, range) | eval img/s (median, range) | "
          "page faults a floor (median) | RSS MiB |\n|---|---:|---:|---:|---:|")
    for s in settings:
        train, scoring, faulted, rss = zip(*results[s])
        print(f"| {s} | {statistics.median(train):,.0f} ({min(train):,.0f}–{max(train):,.0f}) | "
              f"{statistics.median(scoring):,.0f} ({min(scoring):,.0f}–{max(scoring):,.0f}) | "
              f"{statistics.median(faulted):,.0f} | {rss[-1]:,} |")


if __name__ == "__main__":
    main()

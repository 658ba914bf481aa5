"""The CPU path against its floor: every variant of ResNet-32 alone, then lt-bench's default epoch.

    python benchmarks/cpu_speed.py [--root ../shared/data] [--epochs 5] [--compile] [--pair] [--busy]

Floor: ResNet-32 on ready-made random tensors (no data pipeline), timed by the same function the
run's own probe uses (``lt_bench.device.cpu_variant.time_variant``): batch 128 with SGD for training,
batch 1,000 under no_grad for scoring, in fp32 and bf16 (bf16 only where the CPU runs it
natively, unless ``--all-precisions``), contiguous and channels_last, and compiled with
``--compile`` (in the precision a run picks). Its epoch is CIFAR-10-LT IF 100's: 12,406 training and 10,000 test images.

Harness: ``lt-bench train dataset=cifar10_lt`` with the default protocol cut to ``--epochs``
epochs, in a fresh process, as a user runs it (its variant probe and cache included); the median
epoch (training plus scoring) after the first. Beside it the same run pinned to what a CPU run
did before it measured its variant (contiguous, eager). ``--pair`` adds ``lt-bench sweep jobs=2`` with two
seeds side by side and compares the images both push through with those of the one run.
``--busy`` runs the default one again beside a busy-loop process. Run it on an idle machine; it
prints the CPU it measured.
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
from contextlib import nullcontext
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
TRAIN_IMAGES, TEST_IMAGES = 12406, 10000
#: what a CPU run did before it measured its variant
BEFORE = ["channels_last=false", "compile=false"]


def floor_workload(precision: str, train_images: int = TRAIN_IMAGES):
    """The floor's workload (batch 128, scoring at 1,000, CIFAR-10-LT IF 100's epoch) and the
    autocast of ``precision``."""
    from lt_bench.device import cpu_variant

    workload = cpu_variant.Workload((3, 32, 32), 10, precision, 128, 1000, train_images,
                                    TEST_IMAGES, 1)
    autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16"
                else nullcontext())
    return workload, autocast


def floors(precisions: list[str], compiled: str | None, steps: int) -> list[dict]:
    """Every variant's figures; ``compiled``: the precision whose variants are compiled too."""
    from lt_bench.backbones import build_backbone
    from lt_bench.device import cpu_variant
    from lt_bench.device.cpu_memory import keep_freed_memory

    keep_freed_memory()  # as a CPU run does: the floor is the model in the run's allocator
    cpu_variant.TIMED_STEPS = steps
    model = build_backbone("resnet32", 10)
    rows = []
    for precision in precisions:
        workload, autocast = floor_workload(precision)
        for channels_last in (False, True):
            for compile_ in (False, True) if compiled == precision else (False,):
                f = cpu_variant.time_variant(model, workload, autocast, channels_last, compile_,
                                             drop_above=None)
                label = f"{precision}, {cpu_variant.variant_label(channels_last, compile_)}"
                rows.append({"variant": label, **f})
                print(f"floor {label}: {f.get('train_img_s', 0):.0f} train / "
                      f"{f.get('eval_img_s') or 0:.0f} eval img/s, epoch "
                      f"{f.get('epoch_s', float('nan')):.1f} s", flush=True)
    return rows


def lt_bench(args: list[str], workspace: Path, env: dict | None = None) -> list[dict]:
    """Run ``python -m lt_bench ARGS``; return the results.json of every run it made."""
    subprocess.run([sys.executable, "-m", "lt_bench", *args, f"workspace={workspace}",
                    "tracking.tracker=local", "quiet=true"], check=True, cwd=REPO,
                   env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL)
    return [json.loads(p.read_text()) for p in sorted(workspace.glob("runs/*/results.json"))]


def median_epoch(result: dict) -> float:
    times = [h["time/epoch_s"] for h in result["history"][1:]] or \
        [result["history"][0]["time/epoch_s"]]
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=str(REPO / "../shared/data"))
    parser.add_argument("--epochs", type=int, default=5,
                        help="harness epochs (default 5: long enough that the run probes)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per floor variant")
    parser.add_argument("--compile", action="store_true",
                        help="time torch.compile too, in the precision a run uses (slow)")
    parser.add_argument("--all-precisions", action="store_true",
                        help="time bf16 even where the CPU only emulates it")
    parser.add_argument("--pair", action="store_true", help="also two runs side by side")
    parser.add_argument("--busy", action="store_true",
                        help="also the default run beside one busy-loop process (a core taken)")
    args = parser.parse_args()

    from lt_bench.device.defaults import native_bf16
    from lt_bench.workspace.provenance import cpu_model

    native, why = native_bf16(torch.device("cpu"))
    precisions = ["fp32", "bf16"] if native or args.all_precisions else ["fp32"]
    print(f"CPU: {cpu_model()} ({why}), {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads", flush=True)
    default_precision = "bf16" if native else "fp32"
    rows = floors(precisions, default_precision if args.compile else None, args.steps)
    best = min((r for r in rows if r["variant"].startswith(default_precision)
                and "epoch_s" in r), key=lambda r: r["epoch_s"])

    common = ["dataset=cifar10_lt", "imbalance=100", f"data.root={Path(args.root).resolve()}",
              f"protocol.epochs={args.epochs}"]
    with tempfile.TemporaryDirectory() as tmp:
        before = median_epoch(lt_bench(["train", *common, *BEFORE], Path(tmp) / "before")[0])
        print(f"harness as before issue 23 ({' '.join(BEFORE)}): {before:.1f} s an epoch",
              flush=True)
        started = time.perf_counter()
        one = lt_bench(["train", *common], Path(tmp) / "one")[0]
        one_wall = time.perf_counter() - started
        harness = median_epoch(one)
        print(f"harness: {harness:.1f} s an epoch, variant {one['variant'].get('label')} "
              f"({one['variant'].get('how')}: {one['variant'].get('why')}), wall {one_wall:.0f} s",
              flush=True)
        busy = None
        if args.busy:
            loop = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            try:
                beside = lt_bench(["train", *common], Path(tmp) / "busy")[0]
            finally:
                loop.kill()
            busy = median_epoch(beside)
            print(f"beside a busy loop: {busy:.1f} s an epoch ({harness / busy:.2f} of its idle "
                  f"speed), variant {beside['variant'].get('label')}", flush=True)
        pair = None
        if args.pair:
            runs = lt_bench(["sweep", *common, "seeds=2", "jobs=2", "fork=false"],
                            Path(tmp) / "pair")
            pair = [median_epoch(r) for r in runs]
            print(f"pair: {', '.join(f'{s:.1f}' for s in pair)} s an epoch each", flush=True)

    print("\n| variant (model alone) | train img/s | eval img/s | epoch s (12,406 + 10,000) |")
    print("|---|---|---|---|")
    for r in rows:
        if "epoch_s" in r:
            print(f"| {r['variant']} | {r['train_img_s']:,.0f} | {r['eval_img_s']:,.0f} | "
                  f"{r['epoch_s']:.1f} |")
        else:
            print(f"| {r['variant']} | failed: {r.get('error', 'dropped')} | | |")
    print(f"\nbest floor ({best['variant']}): {best['epoch_s']:.1f} s an epoch")
    print(f"default `lt-bench train` epoch: {harness:.1f} s ({one['variant'].get('label')}, "
          f"{one['precision']}): {best['epoch_s'] / harness:.2f} of the floor's speed")
    print(f"the same harness as before issue 23 (contiguous, eager): {before:.1f} s "
          f"({before / harness:.2f}× the default's time)")
    if busy:
        print(f"beside one busy-loop process: {busy:.1f} s an epoch, {harness / busy:.2f} of the "
              "idle run's speed (a fair share of the cores left is 0.5 on 2 cores)")
    if pair:
        images = TRAIN_IMAGES + TEST_IMAGES
        both, alone = sum(images / s for s in pair), images / harness
        print(f"two runs side by side: {both:.0f} img/s together against {alone:.0f} for one run "
              f"with all cores ({both / alone:.2f}×)")


if __name__ == "__main__":
    main()

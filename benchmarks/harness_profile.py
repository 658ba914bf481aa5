"""Where a default `lt-bench train` epoch spends its time beyond the model's own floor.

    python benchmarks/harness_profile.py [--root ../shared/data] [--epochs 3]

Runs ``lt-bench train dataset=cifar10_lt imbalance=100`` as a user runs it (the default tracker,
the variant probe or this machine's cached choice), twice in this process: once plain, for the
epoch times the run records, and once under ``cProfile`` from its second epoch on (the first
holds the probe and the data's first copy), whose cumulative times are summed by the harness's
parts (data pipeline, forward, loss, backward, optimiser, progress and thread checks, loss
read-back, scoring, tracker, checkpoint). The floor is ResNet-32 alone at the same variant and
precision, timed by the routine the probe uses (``cpu_variant.time_variant``). cProfile slows
Python calls, so the profiled epoch is longer than the plain one; the output gives both. Run it
on an idle machine; it prints the CPU.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import statistics
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
#: (label, [(file ending, function name), ...]): a part's time is the sum of its functions'
#: cumulative times; the functions of one part do not call those of another part
PARTS = [
    ("data pipeline (crop, flip, normalise a batch)", [("data/pipeline.py", "train_batches")]),
    ("memory format of the batch", [("~", "<method 'contiguous' of 'torch._C.TensorBase' "
                                          "objects>")]),
    ("forward", [("run/loop.py", "call"), ("device/bf16_fence.py", "forward")]),
    ("loss (the method)", [("lt_bench/method.py", "forward")]),
    ("backward", [("torch/_tensor.py", "backward")]),
    ("optimiser step and zero_grad", [("torch/optim/sgd.py", "step"),
                                      ("torch/optim/optimizer.py", "zero_grad")]),
    ("learning-rate schedule", [("torch/optim/lr_scheduler.py", "step")]),
    ("progress bar, progress.json, thread check", [("run/train.py", "on_step")]),
    ("loss read-back (the one host sync)", [("run/loop.py", "check_finite")]),
    ("scoring the test set", [("run/loop.py", "evaluate_epoch")]),
    ("tracker (metrics of the epoch)", [("tracking/mlflow_tracker.py", "log_metrics"),
                                        ("tracking/base.py", "log_metrics")]),
    ("checkpoint", [("run/checkpoint.py", "save")]),
]
EPOCH = ("run/train.py", "run_epoch")


def run(args: list[str], workspace: Path, profile: cProfile.Profile | None) -> dict:
    """One ``lt-bench train`` in this process, profiled from its second epoch when asked."""
    from lt_bench.cli import main
    from lt_bench.run import train

    plain_epoch = train.run_epoch

    def run_epoch(run, state, epoch):
        if epoch == 0 or profile is None:
            return plain_epoch(run, state, epoch)
        profile.enable()
        try:
            return plain_epoch(run, state, epoch)
        finally:
            profile.disable()

    train.run_epoch = run_epoch
    try:
        assert main(["train", *args, f"workspace={workspace}", "quiet=true"]) == 0
    finally:
        train.run_epoch = plain_epoch
    [found] = workspace.glob("runs/*/results.json")
    return json.loads(found.read_text())


def cumulative(stats: pstats.Stats, where: tuple[str, str]) -> float:
    """Cumulative seconds of the functions named ``where`` (file ending, name)."""
    return sum(cum for (path, _, name), (_, _, _, cum, _) in stats.stats.items()
               if name == where[1] and path.endswith(where[0]))


def floor(result: dict, train_images: int) -> dict:
    """The model alone at the run's variant and precision (``cpu_speed``'s floor)."""
    from cpu_speed import floor_workload  # beside this script: python benchmarks/harness_profile.py

    from lt_bench.backbones import build_backbone
    from lt_bench.device import cpu_variant

    workload, autocast = floor_workload(result["precision"], train_images)
    variant = result["variant"]
    return cpu_variant.time_variant(build_backbone("resnet32", 10), workload, autocast,
                                    bool(variant.get("channels_last")),
                                    bool(variant.get("compile")), drop_above=None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=str(REPO / "../shared/data"))
    parser.add_argument("--epochs", type=int, default=5,
                        help="epochs of each run (default 5: 485 steps, enough that the run probes)")
    parser.add_argument("--out", help="write the output (Markdown) here too")
    a = parser.parse_args()
    if a.epochs < 2:
        parser.error("--epochs: at least 2 (the first is not profiled)")

    from lt_bench.workspace.provenance import cpu_model

    common = ["dataset=cifar10_lt", "imbalance=100", f"data.root={Path(a.root).resolve()}",
              f"protocol.epochs={a.epochs}"]
    profile = cProfile.Profile()
    with tempfile.TemporaryDirectory() as tmp:
        plain = run(common, Path(tmp) / "plain", None)
        profiled = run(common, Path(tmp) / "profiled", profile)
    stats = pstats.Stats(profile)
    later = a.epochs - 1
    plain_epoch = statistics.median(h["time/epoch_s"] for h in plain["history"][1:])
    prof_epoch = statistics.median(h["time/epoch_s"] for h in profiled["history"][1:])
    train_images, test_images = sum(plain["train_counts"]), 10000
    f = floor(plain, train_images)

    epoch_s = cumulative(stats, EPOCH) / later
    parts = {label: sum(cumulative(stats, w) for w in where) / later for label, where in PARTS}
    lines = [f"CPU: {cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads; variant {plain['variant'].get('label')} "
             f"({plain['variant'].get('how')}), {plain['precision']}", "",
             "| part | s an epoch (profiled) | share |", "|---|---:|---:|"]
    lines += [f"| {label} | {s:.2f} | {s / epoch_s:.1%} |" for label, s in parts.items()]
    rest_s = epoch_s - sum(parts.values())
    lines += [f"| the rest (loop, Python between the parts) | {rest_s:.2f} | "
              f"{rest_s / epoch_s:.1%} |",
              f"| the whole epoch (`run_epoch`) | {epoch_s:.2f} | 100 % |"]
    floor_train = train_images / f["train_img_s"]
    floor_eval = test_images / f["eval_img_s"]
    lines += ["", f"Epoch as the run records it (median of epochs 2-{a.epochs}; it leaves out "
              f"the tracker and the checkpoint): {plain_epoch:.2f} s plain, {prof_epoch:.2f} s "
              "profiled.",
              f"Floor at the same variant: {floor_train:.2f} s training "
              f"({f['train_img_s']:,.0f} img/s) + {floor_eval:.2f} s scoring "
              f"({f['eval_img_s']:,.0f} img/s) = {floor_train + floor_eval:.2f} s: the plain "
              f"epoch runs at {(floor_train + floor_eval) / plain_epoch:.2f} of the floor's "
              "speed."]
    text = "\n".join(lines)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")


if __name__ == "__main__":
    main()

"""Section 3 of the device check: what the measured speeds mean for real work. Pure arithmetic
(unit-tested by hand-computed cases in tests/test_benchmarks_device_check.py).

One paper_cifar run on CIFAR-10-LT IF 100: 200 epochs of 125 steps (12,406 training images,
batch 100), the 10,000 test images evaluated after every epoch. The comparison: 6 methods × 5
seeds = 30 runs, either each from scratch, or forked at the re-weighting start (every method
trains plain cross-entropy until epoch 160, so each seed's first 160 epochs are trained once and
the 6 methods branch from there for the last 40).
"""

from __future__ import annotations

import math

TRAIN_IMAGES, BATCH, TEST_IMAGES = 12406, 100, 10000
STEPS_PER_EPOCH = math.ceil(TRAIN_IMAGES / BATCH)  # 125
EPOCHS, FORK_AT, METHODS, SEEDS = 200, 160, 6, 5


def epoch_seconds(step_s: float, eval_img_s: float, steps: int = STEPS_PER_EPOCH,
                  test_images: int = TEST_IMAGES) -> float:
    """One epoch from the model's own speed: training steps plus scoring the test set."""
    return steps * step_s + test_images / eval_img_s


def speedup_at(speedups: dict[int, float], k: int) -> float:
    """Aggregate speed-up of k concurrent runs over one: measured, linear in between the
    measured counts, never extrapolated beyond the largest one."""
    points = sorted({1: 1.0, **{int(n): float(s) for n, s in speedups.items()}}.items())
    if k <= points[0][0]:
        return points[0][1]
    for (a, sa), (b, sb) in zip(points, points[1:]):
        if a <= k <= b:
            return sa + (sb - sa) * (k - a) / (b - a)
    return points[-1][1]


def waves_seconds(count: int, epochs: int, epoch_s: float, concurrency: int,
                  speedups: dict[int, float], overhead_s: float = 0.0) -> float:
    """Wall time of ``count`` equal runs, ``concurrency`` at a time (a sweep starts the next run
    when one ends; with equal runs those are waves). In a wave of k runs each progresses at
    speedup(k)/k of a lone run's speed; ``overhead_s`` (start-up, compilation) once per wave."""
    total, left = 0.0, count
    while left > 0:
        k = min(concurrency, left)
        total += epochs * epoch_s * k / speedup_at(speedups, k) + overhead_s
        left -= k
    return total


def plan(epoch_s: float, concurrency: int, speedups: dict[int, float],
         overhead_s: float = 0.0) -> dict:
    """A lone run, runs per hour at ``concurrency``, and the 30-run comparison with and without
    the fork."""
    run_s = EPOCHS * epoch_s + overhead_s
    s = speedup_at(speedups, concurrency)
    runs = METHODS * SEEDS
    scratch = waves_seconds(runs, EPOCHS, epoch_s, concurrency, speedups, overhead_s)
    forked = (waves_seconds(SEEDS, FORK_AT, epoch_s, concurrency, speedups, overhead_s)
              + waves_seconds(runs, EPOCHS - FORK_AT, epoch_s, concurrency, speedups, overhead_s))
    return {"epoch_s": epoch_s, "run_s": run_s, "concurrency": concurrency, "speedup": s,
            "runs_per_hour": 3600.0 * s / run_s, "comparison_s": scratch,
            "comparison_forked_s": forked,
            "epochs_trained": {"from_scratch": runs * EPOCHS,
                               "forked": SEEDS * FORK_AT + runs * (EPOCHS - FORK_AT)}}


def eval_row(variants: dict, best: dict, batch: int) -> dict | None:
    """The evaluation measurement in the best training variant's precision at ``batch``."""
    bf16 = best.get("precision") == "bf16"
    name = (f"eval bf16 + channels_last, batch {batch}" if bf16 else f"eval fp32, batch {batch}")
    row = variants.get(name) or {}
    return row if row.get("status") == "ok" else None


def projection(speed: dict, concurrency: dict, correctness: dict) -> dict:
    variants = speed.get("variants") or {}
    best_name = speed.get("best_overall") or speed.get("best_eager")
    if not best_name:
        raise ValueError("no training speed was measured, so nothing can be projected")
    best = variants[best_name]
    step_s = best["ms_per_step"] / 1000
    speedups = {int(k): v for k, v in (concurrency.get("speedups") or {}).items()}
    n = int(concurrency.get("best_concurrency") or 1)
    out: dict = {"best_setting": best_name, "step_s": step_s, "concurrency": n,
                 "speedups": speedups, "steps_per_epoch": STEPS_PER_EPOCH,
                 "test_images": TEST_IMAGES, "rows": {}}
    # the harness scores small images 1,000 at a time (eval_batch_size's default)
    ev1000, ev100 = eval_row(variants, best, 1000), eval_row(variants, best, 100)
    ev = ev1000 or ev100 or next((r for k, r in variants.items() if r.get("kind") == "eval"
                                  and r.get("status") == "ok"), None)
    if ev is None:  # training alone: a lower bound on the epoch
        eval_img_s, out["eval_img_per_s"] = math.inf, None
        out["eval_basis"] = "not measured: the epoch times below leave evaluation out"
    else:
        eval_img_s = out["eval_img_per_s"] = ev["img_per_s"]
        out["eval_basis"] = ev.get("name") or ev.get("variant")
    # per run, once: the process start and data loading the harness showed in section 1
    # (its wall time less its epochs), and the compilation of a compiled setting
    harness_epoch = correctness.get("harness_epoch_s")
    first = (correctness.get("runs") or {}).get("i_uninterrupted") or {}
    startup = None
    if first.get("wall_s") and first.get("harness_wall_s"):
        startup = max(0.0, first["wall_s"] - first["harness_wall_s"])
    out["harness_startup_s"] = startup
    compile_s = out["compile_s"] = best.get("compile_s") or 0.0
    overhead = compile_s + (startup or 0.0)
    model_epoch = epoch_seconds(step_s, eval_img_s)
    out["rows"]["model only"] = plan(model_epoch, n, speedups, overhead)
    if ev1000 and ev100:
        out["rows"]["model only, evaluation at batch 100"] = plan(
            epoch_seconds(step_s, ev100["img_per_s"]), n, speedups, overhead)
    if harness_epoch:
        out["rows"]["harness (section 1, dv, deterministic)"] = plan(
            harness_epoch, n, speedups, startup or 0.0)
    if harness_epoch and harness_epoch > model_epoch:
        out["chosen"] = "harness (section 1, dv, deterministic)"
        out["why"] = (f"the harness's measured epoch ({harness_epoch:.2f} s, data pipeline and "
                      f"DV statistics included) is longer than the model's ({model_epoch:.2f} s)")
    else:
        out["chosen"] = "model only"
        out["why"] = ("no harness epoch time was measured" if not harness_epoch else
                      f"the model-only epoch ({model_epoch:.2f} s) is not shorter than the "
                      f"harness's ({harness_epoch:.2f} s)")
    return out

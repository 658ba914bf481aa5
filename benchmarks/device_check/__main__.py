"""One command that checks lt_bench on a rented GPU within a time budget, and records everything.

    python -m benchmarks.device_check OUT_DIR [--device cuda|cpu] [--smoke] [--budget SECONDS]
                                              [--data-root DIR] [--keep-work]

Made to be run once, on a bare machine, with no second chance: every section (and every item in
it) is guarded, so an exception is recorded (type, message, traceback tail) and the check goes
on; OUT_DIR/device_check.json and OUT_DIR/device_check.md are rewritten atomically after every
item; every child process's output goes into OUT_DIR/device_check.log. Run folders live in a
temporary work folder, not in OUT_DIR. Sections, each with a deadline (a share of the budget):

1. correctness: class-volume weights (dv, pv, bv) on the device vs float64 on the CPU; a 3-epoch
   dv run through the CLI uninterrupted, killed at its first checkpoint and resumed, and again
   (equal results), and the precision it used;
2. speed of ResNet-32 training steps (eager fp32/bf16, channels_last, fused SGD, torch.compile
   default and reduce-overhead) and evaluation; then 1, 2, 4, 8 concurrent processes;
3. projection: one 200-epoch paper_cifar run, runs per hour, a 30-run comparison (with and
   without a fork at epoch 160);
4. with the time left: 200-epoch paper_cifar runs of ce and dv, killed at the budget's end.

``--smoke`` runs every code path at toy sizes on synthetic data (under 3 minutes on 2 CPU
cores). See benchmarks/device_check.md for running it on the GPU machine. Exit status: 0, or 1
when a correctness check failed, or 2 for a usage error.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.device_check import common, machine, markdown, runs
from benchmarks.device_check import projection as projections
from benchmarks.device_check import speed as speeds
from benchmarks.device_check.common import Child, Clock, CombinedLog, Progress, Report, UserError

HERE = Path(__file__).resolve().parent
PLUGIN = HERE / "data.py"


class Ctx:
    """What every section needs: the clock, the log, the work folder and the data it runs on."""

    def __init__(self, args, clock: Clock, log: CombinedLog, report: Report, work: Path):
        self.clock, self.log, self.report, self.work = clock, log, report, work
        self.say = Progress(clock, log)
        self.device, self.smoke = args.device, args.smoke
        self.cores = os.cpu_count() or 1
        self.notes: list[str] = report.data["notes"]
        self.replace: dict[str, str] = {}  # run arguments changed by a fallback
        self.env_extra = {"LT_BENCH_CACHE": os.environ.get("LT_BENCH_CACHE") or work / "cache",
                          # deterministic cuBLAS for the deterministic runs; harmless elsewhere
                          "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
        self.env = common.child_env(self.env_extra)
        self.real_data = False
        if args.smoke:
            self.data_args = ["dataset=synthetic_lt", "imbalance=10"]
            self.data_kind = "synthetic_lt (smoke: 16×16, 5 classes, IF 10)"
            return
        root = Path(args.data_root).expanduser().resolve() if args.data_root else None
        if root and ((root / "cifar10-jpeg.tar.gz").is_file()
                     or (root / "cifar-10-batches-py").is_dir()):
            self.real_data = True
            self.data_args = ["dataset=cifar10_lt", "imbalance=100", f"data.root={root}"]
            self.data_kind = f"CIFAR-10-LT IF 100, real data from {root}"
        else:
            self.data_args = [f"plugins=['{PLUGIN}']", "dataset=cifar_shaped_lt", "imbalance=100"]
            self.data_kind = "cifar_shaped_lt (generated, CIFAR-10-LT IF 100 shapes and counts)"
            self.notes.append(f"no CIFAR-10 under --data-root {args.data_root!r}: generated "
                              "CIFAR-shaped data instead" if args.data_root else
                              "no --data-root: generated CIFAR-shaped data instead")

    def update_device(self, facts: dict) -> None:
        if facts.get("name"):
            self.report.data["device"] = facts["name"]
        self.report.data["device_facts"] = facts


def volume_weights(ctx: Ctx, sec: dict, deadline: float) -> None:
    vw = sec.setdefault("volume_weights", {"methods": {}})
    vw["logits"] = ("12,406 class-structured random logits (CIFAR-10-LT IF 100 counts), float32, "
                    "batches of 100, start_epoch=0")
    vw["tolerance"] = 1e-5
    spec = {"device": ctx.device, "methods": ["dv", "pv", "bv"], "tolerance": 1e-5,
            "deadline": ctx.clock.wall(deadline)}

    def on_record(rec: dict) -> None:
        if "facts" in rec:
            ctx.update_device(rec["facts"])
        elif "method" in rec:
            vw["methods"][rec["method"]] = rec
            if rec.get("status") == "error":
                ctx.report.failure(f"correctness/volume_weights/{rec['method']}",
                                   rec.get("error"), rec.get("traceback"))
            ctx.say(f"volume weights {rec['method']}: {rec.get('status')}, max rel diff "
                    f"{rec.get('max_rel_diff')}, passed {rec.get('passed')}")
            ctx.report.save()
        elif rec.get("fatal"):
            vw["error"] = rec

    child = Child("volume weights", speeds.worker_cmd("volume", spec), ctx.log,
                  env=ctx.env, cwd=ctx.work)
    # seconds on a GPU; a hang (a stuck CUDA start) must not eat the training runs' time too
    rc = child.follow(min(deadline, time.monotonic() + 120), on_record)
    vw.update(exit=rc, wall_s=round(child.wall_s, 1))
    for method in spec["methods"]:
        if method not in vw["methods"]:
            vw["methods"][method] = {"status": "not reported", "passed": False,
                                     "reason": child.kill_reason or f"worker exit {rc}"}
    if rc != 0:
        vw["output_tail"] = child.tail()
        ctx.report.failure("correctness/volume_weights", child.kill_reason or f"exit {rc}",
                           child.tail())


def guarded(ctx: Ctx, sec: dict, where: str, fn, *args) -> None:
    """One item of a section: its exception is recorded and the section goes on."""
    try:
        fn(*args)
    except Exception as exc:
        sec.setdefault("item_errors", []).append(ctx.report.error(exc, where))
        ctx.say(f"{where}: ERROR {type(exc).__name__}: {exc}")
    ctx.report.save()


def correctness(sec: dict, ctx: Ctx) -> None:
    deadline = ctx.clock.deadlines["correctness"]
    guarded(ctx, sec, "correctness/volume_weights", volume_weights, ctx, sec, deadline)
    guarded(ctx, sec, "correctness/runs", runs.correctness_runs, ctx, sec, deadline,
            ctx.report.save)
    cut = [r for r in (sec.get("runs") or {}).values() if r.get("killed") == "deadline"]
    cut += [c for c in (sec.get("checks") or {}).values() if "deadline" in str(c.get("reason"))]
    if cut or sec.get("item_errors"):
        sec["status"] = "partial"


def speed(sec: dict, ctx: Ctx) -> None:
    speeds.speed(ctx, sec, ctx.clock.deadlines["speed"], ctx.report.save)


def concurrency(sec: dict, ctx: Ctx) -> None:
    s = ctx.report.section("speed")
    best = (s.get("variants") or {}).get(s.get("best_eager") or "")
    speeds.concurrency(ctx, sec, ctx.clock.deadlines["concurrency"], best,
                                   ctx.report.save)


def projection(sec: dict, ctx: Ctx) -> None:
    sec.update(projections.projection(
        ctx.report.section("speed"), ctx.report.section("concurrency"),
        ctx.report.section("correctness")))


def long_runs(sec: dict, ctx: Ctx) -> None:
    conc = ctx.report.section("concurrency")
    n = int(conc.get("best_concurrency") or 1)
    proj = ctx.report.section("projection")
    row = (proj.get("rows") or {}).get(proj.get("chosen") or "")
    estimate = None
    if row and not ctx.smoke:  # a run among n at a time takes n/speedup(n) times as long
        speedups = {int(k): v for k, v in (conc.get("speedups") or {}).items()}
        estimate = row["run_s"] * min(n, 8) / projections.speedup_at(speedups, n)
    runs.long_runs(ctx, sec, ctx.clock.deadlines["long_runs"], n, estimate,
                                ctx.report.save, compile_args(ctx.report.section("speed")))


#: how much faster a compiled step must be before the long runs pay each process's compile time
COMPILE_WORTH = 1.3


def compile_args(speed: dict) -> list[str]:
    """``compile=true compile_mode=M`` when the fastest variant whose logits matched eager is a
    compiled one and beats the fastest eager step by COMPILE_WORTH; else ``compile=false``
    (explicit: the harness compiles a one-process CUDA run by default)."""
    variants = speed.get("variants") or {}
    best, eager = variants.get(speed.get("best_overall") or ""), variants.get(
        speed.get("best_eager") or "")
    if not (best and eager and best.get("compile")):
        return ["compile=false"]
    if eager["ms_per_step"] / best["ms_per_step"] < COMPILE_WORTH:
        return ["compile=false"]
    return ["compile=true", f"compile_mode={best['compile']}"]


SECTIONS = (("correctness", correctness), ("speed", speed), ("concurrency", concurrency),
            ("projection", projection), ("long_runs", long_runs))


def prepare(args) -> tuple[Path, float]:
    if not args.out_dir:
        raise UserError("give OUT_DIR, the folder for device_check.json, .md and .log")
    out = Path(args.out_dir).expanduser().resolve()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".device_check_probe"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"cannot write to OUT_DIR {str(out)!r}: {exc.strerror or exc}") from None
    budget = args.budget if args.budget is not None else (170.0 if args.smoke else 480.0)
    if not budget > 30:
        raise UserError(f"--budget must be more than 30 seconds, got {budget}")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():  # asks the driver; creates no CUDA context here
            raise UserError("--device cuda, but torch sees no CUDA GPU here; use --device cpu")
    return out, budget


def check(args) -> int:
    out, budget = prepare(args)
    import torch

    clock = Clock(budget)
    (out / "device_check.log").unlink(missing_ok=True)
    log = CombinedLog(out / "device_check.log", clock)
    gpu_name = machine.nvidia_smi("name") if args.device == "cuda" else None
    data = {"device": gpu_name[0][0] if gpu_name else (
                "CUDA device" if args.device == "cuda" else machine.cpu_model()),
            "device_type": args.device, "torch": torch.__version__,
            "python": platform.python_version(), "cores": os.cpu_count(),
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "budget_s": budget, "smoke": args.smoke, "out_dir": str(out), "notes": [],
            "deadlines_s": {k: round(v - clock.t0, 1) for k, v in clock.deadlines.items()},
            "sections": {name: {} for name, _ in SECTIONS}, "errors": [], "elapsed_s": 0.0}
    report = Report(out, data, clock, markdown.render)
    work = Path(tempfile.mkdtemp(prefix="device_check_"))
    data["work_dir"] = str(work)
    ctx = Ctx(args, clock, log, report, work)
    data["data"] = ctx.data_kind
    report.save()
    ctx.say(f"device check on {data['device']}: budget {budget:.0f} s, data {ctx.data_kind}, "
            f"out {out}, work {work}")
    try:
        for name, fn in SECTIONS:
            common.run_section(report, name, ctx.say, fn, ctx)
    finally:
        common.kill_all_children()
        report.save()
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    verdicts = markdown.checks(report.data)
    ctx.say("Correctness: " + " · ".join(f"{label} {markdown.verdict(p)}"
                                         for label, p in verdicts))
    ctx.say(f"done in {clock.elapsed():.0f} s: {out / 'device_check.md'}")
    return 1 if any(p is False for _, p in verdicts) else 0


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Check lt_bench on a device within a time budget (correctness, speed, "
                    "concurrency, projection, long runs); writes OUT_DIR/device_check.{json,md,log}.")
    parser.add_argument("out_dir", nargs="?", metavar="OUT_DIR")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--smoke", action="store_true",
                        help="toy sizes on synthetic data: every code path in a few minutes")
    parser.add_argument("--budget", type=float, metavar="SECONDS",
                        help="total time (default 480; 170 with --smoke)")
    parser.add_argument("--data-root", metavar="DIR",
                        help="folder with cifar10-jpeg.tar.gz (else generated CIFAR-shaped data)")
    parser.add_argument("--keep-work", action="store_true",
                        help="keep the temporary work folder (run folders, checkpoints)")
    parser.add_argument("--worker", choices=("volume", "speed", "throughput"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _terminate(signum, frame):
    # SIGTERM (a harness's timeout) unwinds like an exception, so the finally blocks kill the
    # children and write the report one last time
    raise SystemExit(128 + signum)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        from benchmarks.device_check.workers import run_worker

        return run_worker(args.worker, args.spec or "{}")
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return check(args)
    except UserError as exc:
        print(f"device_check: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("device_check: interrupted; the report has what was measured", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

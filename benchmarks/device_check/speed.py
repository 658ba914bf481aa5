"""Section 2 of the device check, the parent's side: which variants to time, the speed worker
(started again for the remaining variants if one crashes it), and the concurrency phase (1, 2, 4,
8 processes on the one device, as ``lt-bench sweep jobs=N`` runs them).
"""

from __future__ import annotations

import json
import shutil
import sys
import time

from benchmarks.device_check.common import Child, child_env
from benchmarks.device_check.machine import GpuSampler

LEVELS, SMOKE_LEVELS = (1, 2, 4, 8), (1, 2)


def variants(cuda: bool) -> list[dict]:
    bf16_cl = {"precision": "bf16", "channels_last": True}
    out = [
        {"name": "eager fp32", "precision": "fp32", "channels_last": False},
        {"name": "eager bf16", "precision": "bf16", "channels_last": False},
        {"name": "eager bf16 + channels_last", **bf16_cl},
        {"name": "eager fp32 + channels_last", "precision": "fp32", "channels_last": True},
        {"name": "eager bf16 + channels_last + fused SGD", **bf16_cl, "fused": True},
    ]
    for batch in (1000, 100):
        out.append({"name": f"eval fp32, batch {batch}", "kind": "eval", "precision": "fp32",
                    "channels_last": False, "batch": batch})
        out.append({"name": f"eval bf16 + channels_last, batch {batch}", "kind": "eval",
                    **bf16_cl, "batch": batch})
    # what the harness would compile: bf16, channels_last, fused SGD where CUDA has it
    for mode in ("default", "reduce-overhead"):
        out.append({"name": f"compile {mode} (bf16 + channels_last"
                            f"{' + fused SGD' if cuda else ''})",
                    **bf16_cl, "fused": cuda, "compile": mode})
    return out


#: the order in which they run, when it differs from the table's: what the projection needs
#: (the harness's own setting, the evaluation) before what only compares
FIRST = ("eager fp32", "eager bf16 + channels_last + fused SGD",
         "eval bf16 + channels_last, batch 1000", "eval bf16 + channels_last, batch 100",
         "eval fp32, batch 1000", "eval fp32, batch 100")


def run_order(vs: list[dict]) -> list[dict]:
    return sorted(vs, key=lambda v: FIRST.index(v["name"]) if v["name"] in FIRST else len(FIRST))


def counts(cuda: bool, smoke: bool) -> dict:
    if cuda:
        return {"warm": 30, "steps": 200, "eval_warm": 5, "eval_iters_1000": 30,
                "eval_iters_100": 200}
    if smoke:
        return {"warm": 2, "steps": 3, "eval_warm": 1, "eval_iters_1000": 1, "eval_iters_100": 3}
    return {"warm": 3, "steps": 20, "eval_warm": 1, "eval_iters_1000": 3, "eval_iters_100": 20}


def worker_cmd(kind: str, spec: dict) -> list[str]:
    return [sys.executable, "-m", __package__, "--worker", kind, "--spec", json.dumps(spec)]


def speed(ctx, sec: dict, deadline: float, save) -> None:
    cuda = ctx.device == "cuda"
    backend = None
    results: dict[str, dict] = sec.setdefault("variants", {})
    todo = []
    for v in run_order(variants(cuda)):
        if v.get("compile") == "reduce-overhead" and not cuda:
            results[v["name"]] = {**v, "status": "skipped", "reason": "CUDA only"}
        else:
            todo.append(v)
    if ctx.smoke and not cuda:
        # inductor needs about 30 s of C++ compilation on a 2-core CPU; aot_eager runs the same
        # torch.compile path (Dynamo, AOTAutograd) without code generation
        backend = "aot_eager"
        sec["compile_note"] = "smoke on CPU: backend aot_eager (the code path, not inductor)"
    sec.update(counts=counts(cuda, ctx.smoke), batch=100, model="resnet32, 10 classes",
               criterion="ce", optimizer="SGD lr 0.1 momentum 0.9 nesterov wd 5e-4")
    by_name = {v["name"]: v for v in todo}
    attempts = 0
    while todo and attempts < 3 and deadline - time.monotonic() > 3:
        attempts += 1
        spec = {"device": ctx.device, "variants": todo, "counts": sec["counts"],
                "compile_backend": backend, "deadline": ctx.clock.wall(deadline) - 1}
        child = Child(f"speed worker {attempts}", worker_cmd("speed", spec), ctx.log,
                      env=ctx.env, cwd=ctx.work)
        recorder = Recorder(ctx, sec, by_name, save)
        rc = child.follow(deadline, recorder)
        if recorder.current:  # the variant it was in when it died or was killed
            name = recorder.current
            why = (f"killed at the section deadline after {child.wall_s:.0f} s"
                   if child.kill_reason else f"the worker died (exit {rc})")
            results[name] = {**by_name[name], "reason": why, "output_tail": child.tail(),
                             "status": "killed" if child.kill_reason else "crashed"}
            ctx.say(f"speed {name}: {why}")
            if not child.kill_reason:
                ctx.report.failure(f"speed/{name}", why, child.tail())
        todo = [v for v in todo if v["name"] not in results]
        if child.kill_reason:
            break
    if todo and attempts >= 3 and deadline - time.monotonic() > 3:
        why = f"the speed worker failed {attempts} times before reaching these"
        ctx.report.failure("speed", why, child.tail())
    else:
        why = "section deadline"
    for v in todo:
        results.setdefault(v["name"], {**v, "status": "skipped", "reason": why})
    order = [v["name"] for v in variants(cuda)]
    sec["variants"] = results = {k: results[k] for k in sorted(results, key=order.index)}
    if any(r.get("status") != "ok" and r.get("reason") != "CUDA only" for r in results.values()):
        sec["status"] = "partial"
    sec["best_eager"], sec["best_overall"] = best_variants(results)
    save()


class Recorder:
    """Takes the speed worker's records as they come: each result into the report at once."""

    def __init__(self, ctx, sec: dict, by_name: dict, save):
        self.ctx, self.sec, self.by_name, self.save = ctx, sec, by_name, save
        self.current: str | None = None

    def __call__(self, rec: dict) -> None:
        if "facts" in rec:
            self.sec["facts"] = rec["facts"]
            self.ctx.update_device(rec["facts"])
        elif "begin" in rec:
            self.current = rec["begin"]
        elif "variant" in rec:
            self.sec["variants"][rec["variant"]] = {**self.by_name[rec["variant"]], **rec}
            self.current = None
            if rec.get("status") == "error":
                self.ctx.report.failure(f"speed/{rec['variant']}", rec.get("error"),
                                        rec.get("traceback"))
            self.ctx.say(f"speed {rec['variant']}: {brief(rec)}")
            self.save()
        elif rec.get("fatal"):
            self.sec.setdefault("worker_errors", []).append(rec)


def brief(rec: dict) -> str:
    if rec.get("status") != "ok":
        return f"{rec.get('status')}: {rec.get('reason') or rec.get('error')}"
    text = f"{rec['img_per_s']:.0f} img/s"
    if "ms_per_step" in rec:
        text += f", {rec['ms_per_step']:.2f} ms/step"
    if "compile_s" in rec:
        text += f", compile {rec['compile_s']:.1f} s, logits match: {rec.get('outputs_match')}"
    return text


def best_variants(results: dict) -> tuple[str | None, str | None]:
    """The fastest eager training variant, and the fastest of all whose outputs match eager."""
    train = {k: r for k, r in results.items() if r.get("status") == "ok" and "ms_per_step" in r
             and r.get("loss_finite", True)}
    eager = {k: r for k, r in train.items() if not r.get("compile")}
    usable = {k: r for k, r in train.items() if not r.get("compile") or r.get("outputs_match")}

    def fastest(d):
        return min(d, key=lambda k: d[k]["ms_per_step"]) if d else None

    return fastest(eager), fastest(usable)


# -- concurrency ------------------------------------------------------------------------------------
def concurrency(ctx, sec: dict, deadline: float, variant: dict | None, save) -> None:
    cuda = ctx.device == "cuda"
    if variant is None:
        variant = {"name": "eager bf16 + channels_last" if cuda else "eager fp32",
                   "precision": "bf16" if cuda else "fp32", "channels_last": cuda}
        sec["variant_note"] = "no eager speed result: a default variant"
    variant = {k: variant[k] for k in ("name", "precision", "channels_last", "fused")
               if k in variant}
    window = 6.0 if cuda else (2.0 if ctx.smoke else 5.0)
    warm = 30 if cuda else 1
    sec.update(variant=variant, window_s=window, warm_steps=warm, levels={},
               threads_per_process="cores // N (as lt-bench sweep jobs=N)")
    last_took = None
    for n in SMOKE_LEVELS if ctx.smoke else LEVELS:
        room = deadline - time.monotonic()
        # a level takes start-up + warm-up + window; more processes take a little longer
        if (last_took is not None and last_took * 1.3 > room) or room < window + 2:
            sec["levels"][str(n)] = {"processes": n, "status": "skipped",
                                     "reason": f"{room:.0f} s left in the section"}
            continue
        started = time.monotonic()
        sec["levels"][str(n)] = level(ctx, n, variant, window, warm, deadline)
        last_took = time.monotonic() - started
        r = sec["levels"][str(n)]
        ctx.say(f"concurrency {n}: {r.get('status')}, aggregate {r.get('aggregate_img_per_s')} "
                f"img/s, GPU util {r.get('gpu_util_mean')}")
        save()
    if any(r.get("status") != "ok" for r in sec["levels"].values()):
        sec["status"] = "partial"
    ok = {int(k): r for k, r in sec["levels"].items() if r.get("status") == "ok"}
    base = ok.get(1, {}).get("aggregate_img_per_s")
    for r in ok.values():
        r["speedup_vs_1"] = r["aggregate_img_per_s"] / base if base else None
    sec["best_concurrency"] = (max(sorted(ok), key=lambda k: ok[k]["aggregate_img_per_s"])
                               if ok else 1)
    sec["speedups"] = {str(k): r["speedup_vs_1"] for k, r in ok.items() if r["speedup_vs_1"]}


def level(ctx, n: int, variant: dict, window: float, warm: int, deadline: float) -> dict:
    barrier = ctx.work / f"barrier-{n}"
    shutil.rmtree(barrier, ignore_errors=True)
    barrier.mkdir(parents=True)
    threads = max(1, ctx.cores // n)
    env = child_env({**ctx.env_extra, "OMP_NUM_THREADS": threads})
    max_wait = max(5.0, min(60.0, deadline - time.monotonic() - window - 2))
    with GpuSampler() as sampler:
        children = [Child(f"throughput {n}x#{i}", worker_cmd("throughput", {
            "device": ctx.device, "variant": variant, "warm": warm, "window_s": window,
            "barrier": str(barrier), "n": n, "index": i, "max_wait_s": max_wait}),
            ctx.log, env=env, cwd=ctx.work) for i in range(n)]
        codes = [c.wait(deadline) for c in children]
    records = [r for c in children for r in c.records if r.get("status") == "ok"]
    out = {"processes": n, "threads_per_process": threads, "exit_codes": codes}
    if len(records) < n:
        bad = next((c for c in children if c.proc.returncode != 0), children[0])
        out.update(status="killed" if any(c.kill_reason for c in children) else "failed",
                   reports=len(records), output_tail=bad.tail())
        if out["status"] == "failed":
            ctx.report.failure(f"concurrency/{n}", f"{len(records)} of {n} processes reported",
                               bad.tail())
        return out
    start = max(r["window_start"] for r in records)
    end = min(r["window_end"] for r in records)
    out.update(status="ok", aggregate_img_per_s=sum(r["img_per_s"] for r in records),
               per_process_img_per_s=[r["img_per_s"] for r in records],
               overlap_s=end - start, barrier_wait_s=max(r["barrier_wait_s"] for r in records),
               **sampler.summary(start, end))
    return out

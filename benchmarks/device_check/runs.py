"""Training runs through the real CLI (``python -m lt_bench train``) for the device check:
section 1b (uninterrupted, killed and resumed, deterministic twice) and section 4 (as many long
runs as the budget allows). Each run gets its own workspace under the check's work folder.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import time
from pathlib import Path

from benchmarks.device_check.common import Child, child_env

RUN_1B = ["method=dv", "protocol=paper_cifar", "protocol.epochs=3", "protocol.milestones=[2]",
          "protocol.start_epoch=1", "tracking.tracker=local", "deterministic=true", "seed=0"]


# -- reading a run's folder -----------------------------------------------------------------------
def run_file(workspace: Path, name: str) -> Path | None:
    return next(iter(sorted(Path(workspace).glob(f"runs/*/{name}"))), None)


def read_results(workspace: Path) -> dict | None:
    import json

    path = run_file(workspace, "results.json")
    if path is None:
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_checkpoint(workspace: Path) -> dict | None:
    """The epochs done and the last scores from a checkpoint; tolerant of its exact layout
    (only ``history``, a list of per-epoch dicts with ``test/acc``, or ``epoch`` are used)."""
    path = run_file(workspace, "checkpoint.pt")
    if path is None:
        return None
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"[:500]}
    history = [h for h in (state.get("history") or []) if isinstance(h, dict)]
    done = len(history) if history else int(state.get("epoch", -1)) + 1
    return {"epochs_done": done, "checkpoint_epoch": state.get("epoch"),
            **scores(history)}


def scores(history: list[dict]) -> dict:
    scored = [h for h in history if "test/acc" in h]
    out: dict = {"epoch_s": epoch_seconds(history)}
    if scored:
        last, best = scored[-1], max(scored, key=lambda h: h["test/acc"])
        out.update(final_acc=last["test/acc"], best_acc=best["test/acc"],
                   best_epoch=best.get("epoch"),
                   **{g: last.get(f"test/acc_{g}") for g in ("many", "medium", "few")})
    return out


def epoch_seconds(history: list[dict]) -> float | None:
    """The median epoch time without the first epoch (start-up, autotuning) when there is more."""
    times = [h["time/epoch_s"] for h in history if isinstance(h.get("time/epoch_s"), (int, float))]
    if not times:
        return None
    return statistics.median(times[1:] if len(times) > 1 else times)


def results_summary(results: dict) -> dict:
    final, best = results.get("final") or {}, results.get("best") or {}
    history = results.get("history") or []
    return {"status": results.get("status"), "epochs_done": len(history),
            "final_acc": final.get("acc"), "best_acc": best.get("acc"),
            "best_epoch": best.get("epoch"),
            **{g: final.get(f"acc_{g}") for g in ("many", "medium", "few")},
            "harness_wall_s": results.get("wall_time_s"), "epoch_s": epoch_seconds(history)}


# -- precision --------------------------------------------------------------------------------------
def precision_used(results: dict | None) -> dict:
    """What the run trained in: results.json's ``precision`` (what ``precision=auto`` chose)."""
    found = (results or {}).get("precision")
    return {"found": found, "source": "results.json" if found else "not found"}


# -- running ------------------------------------------------------------------------------------------
def train_cmd(ctx, workspace: Path, extra: list[str]) -> list[str]:
    extra = [ctx.replace.get(a, a) for a in extra]
    return [sys.executable, "-m", "lt_bench", "train", *ctx.data_args, *extra,
            "precision=auto", f"workspace={workspace}"]


def fallback(ctx, output: str) -> str | None:
    """A change that lets a run which failed on the config go through, once: an op without a
    deterministic implementation on this device. The run's results are still worth having; the
    change is recorded in the notes."""
    if ("deterministic" in output and "deterministic=true" not in ctx.replace
            and ("does not have a deterministic implementation" in output
                 or "use_deterministic_algorithms" in output)):
        ctx.replace["deterministic=true"] = "deterministic=false"
        return ("an op has no deterministic implementation here; the correctness runs used "
                "deterministic=false (so 'deterministic' and 'resume' may differ by noise)")
    return None


def start(ctx, name: str, workspace: Path, extra: list[str], env=None) -> Child:
    # cwd is the work folder: the repository is then not on sys.path and the installed
    # lt_bench (on the device machine: the wheel with its entry points) is the one that runs
    return Child(name, train_cmd(ctx, workspace, extra), ctx.log, env=env or ctx.env,
                 cwd=ctx.work)


def run_to_end(ctx, name: str, workspace: Path, extra: list[str], deadline: float):
    """Start, wait, and retry once after a fallback (see ``fallback``)."""
    child = start(ctx, name, workspace, extra)
    rc = child.wait(deadline)
    change = fallback(ctx, child.output()) if rc != 0 and not child.kill_reason else None
    if change is not None:
        ctx.notes.append(change)
        ctx.say(change)
        shutil.rmtree(workspace, ignore_errors=True)
        child = start(ctx, name, workspace, extra)
        rc = child.wait(deadline)
    return child, rc


def describe(ctx, child: Child, rc: int, workspace: Path) -> dict:
    results = read_results(workspace)
    out = {"exit": rc, "wall_s": round(child.wall_s, 2), "killed": child.kill_reason}
    if results:
        out.update(results_summary(results))
    else:
        out["finished"] = False
    if rc != 0 and not child.kill_reason:
        out["output_tail"] = child.tail()
        ctx.report.failure(child.name, f"lt_bench train exited with {rc}", child.tail())
    return out


def compare(a: dict, b: dict) -> dict:
    """Exact equality of what two runs computed: final and best scores (per class included),
    the per-epoch training loss and the class-weight trajectory."""
    loss_a = [h.get("train/loss") for h in a.get("history", [])]
    loss_b = [h.get("train/loss") for h in b.get("history", [])]
    parts = {"final": a.get("final") == b.get("final"), "best": a.get("best") == b.get("best"),
             "train_loss": loss_a == loss_b,
             "class_weights": a.get("class_weights") == b.get("class_weights")}
    out = {"equal": all(parts.values()), "parts": parts,
           "final_acc": [(a.get("final") or {}).get("acc"), (b.get("final") or {}).get("acc")]}
    if not parts["train_loss"] and len(loss_a) == len(loss_b):
        out["train_loss_max_abs_diff"] = max(abs(x - y) for x, y in zip(loss_a, loss_b)
                                             if x is not None and y is not None)
    return out


def prepare_data(ctx, sec: dict, deadline: float) -> None:
    """Decode the real archive into the cache once, so that no run's wall time includes it and
    no two concurrent runs race to build it."""
    cmd = [sys.executable, "-m", "lt_bench", "data", "describe", "--json", *ctx.data_args,
           "data.progress=false"]
    child = Child("data prep", cmd, ctx.log, env=ctx.env, cwd=ctx.work)
    rc = child.wait(deadline)
    sec["data_prep"] = {"exit": rc, "wall_s": round(child.wall_s, 1), "killed": child.kill_reason}
    if rc != 0:
        sec["data_prep"]["output_tail"] = child.tail()
        ctx.report.failure("correctness/data_prep", child.kill_reason or f"exit {rc}",
                           child.tail())
    ctx.say(f"data prep: exit {rc} in {child.wall_s:.1f} s")


def correctness_runs(ctx, sec: dict, deadline: float, save) -> None:
    sec["data"] = ctx.data_kind
    sec["command_args"] = [*ctx.data_args, *RUN_1B, "precision=auto"]
    runs = sec.setdefault("runs", {})
    checks = sec.setdefault("checks", {})
    if ctx.real_data:
        prepare_data(ctx, sec, deadline)
        save()
    root = ctx.work / "correctness"
    ws = {k: root / k for k in ("i", "ii", "iii")}

    child, rc = run_to_end(ctx, "run (i)", ws["i"], RUN_1B, deadline)
    runs["i_uninterrupted"] = describe(ctx, child, rc, ws["i"])
    first = read_results(ws["i"])
    if first is None:  # cut off: its checkpoint still tells the epoch time
        runs["i_uninterrupted"].update(read_checkpoint(ws["i"]) or {"epochs_done": 0})
    checks["precision"] = precision_used(first)
    checks["precision"]["passed"] = (checks["precision"]["found"] == "bf16"
                                     if ctx.device == "cuda" else None)
    sec["harness_epoch_s"] = runs["i_uninterrupted"].get("epoch_s")
    ctx.say(f"run (i): exit {rc} in {child.wall_s:.1f} s, precision {checks['precision']}")
    save()
    if first is None:  # not run (None) when the deadline cut it, failed (False) otherwise
        cut = child.kill_reason == "deadline"
        why = ("run (i) was cut off by the section deadline" if cut
               else "run (i) produced no results.json")
        checks["resume"] = {"passed": None if cut else False, "reason": why}
        checks["deterministic"] = dict(checks["resume"])
        return

    # (ii): killed at its first checkpoint, then started again
    child = start(ctx, "run (ii) killed", ws["ii"], RUN_1B)
    seen = None
    while seen is None and child.running() and time.monotonic() < deadline:
        seen = run_file(ws["ii"], "checkpoint.pt")
        time.sleep(0.01)
    seen = seen or run_file(ws["ii"], "checkpoint.pt")
    interrupted = seen is not None and child.running()
    if interrupted:
        child.kill("its first checkpoint appeared")
    else:
        child.wait(deadline)
    progress = read_checkpoint(ws["ii"]) or {}
    killed = {"interrupted": interrupted, "wall_s": round(child.wall_s, 2),
              "exit": child.proc.returncode, "killed": child.kill_reason,
              "results_before_resume": read_results(ws["ii"]) is not None,
              "epochs_done": progress.get("epochs_done"), "checkpoint": progress}
    runs["ii_killed"] = killed
    ctx.say(f"run (ii): killed={interrupted} after {child.wall_s:.1f} s")
    save()
    if time.monotonic() >= deadline:
        checks["resume"] = {"passed": None, "reason": "section deadline before the resume"}
    else:
        child = start(ctx, "run (ii) resumed", ws["ii"], RUN_1B)
        rc = child.wait(deadline)
        runs["ii_resumed"] = describe(ctx, child, rc, ws["ii"])
        runs["ii_resumed"]["said_resuming"] = "resuming" in child.output()
        second = read_results(ws["ii"])
        if second is None:
            checks["resume"] = {"passed": None if child.kill_reason else False,
                                "reason": "the resumed run left no results"
                                + (" (cut off by the section deadline)" if child.kill_reason
                                   else "")}
        else:
            cmp = compare(first, second)
            ok = cmp["equal"] and interrupted and not killed["results_before_resume"]
            checks["resume"] = {"passed": ok, **cmp}
            if not interrupted:
                checks["resume"]["reason"] = "the run ended before it could be killed"
        ctx.say(f"run (ii) resumed: exit {rc}, equal to (i): {checks['resume'].get('passed')}")
    save()

    # (iii): the same again, to see that two uninterrupted runs agree
    if time.monotonic() >= deadline:
        checks["deterministic"] = {"passed": None, "reason": "section deadline before run (iii)"}
        return
    child, rc = run_to_end(ctx, "run (iii)", ws["iii"], RUN_1B, deadline)
    runs["iii_uninterrupted"] = describe(ctx, child, rc, ws["iii"])
    third = read_results(ws["iii"])
    checks["deterministic"] = ({"passed": None if child.kill_reason else False,
                                "reason": "run (iii) left no results"
                                + (" (cut off by the section deadline)" if child.kill_reason
                                   else "")}
                               if third is None else
                               {"passed": compare(first, third)["equal"], **compare(first, third)})
    ctx.say(f"run (iii): exit {rc}, equal to (i): {checks['deterministic']['passed']}")


# -- section 4 ---------------------------------------------------------------------------------------
def long_run_queue(smoke: bool):
    seed = 0
    while True:
        for method in ("ce", "dv"):
            yield method, seed
        seed += 1
        if smoke:
            return


def long_runs(ctx, sec: dict, deadline: float, concurrency: int, estimate_s: float | None,
              save, compiled: list[str] = ()) -> None:
    n = max(1, min(8, int(concurrency)))
    if ctx.smoke:
        n = min(n, 2)
        extra = ["protocol=paper_cifar", "protocol.epochs=2", "protocol.milestones=[1]",
                 "protocol.start_epoch=1"]
    else:
        extra = ["protocol=paper_cifar"]
    extra += ["tracking.tracker=local"]
    # the compile options go last, so that a failed compiled run can drop them for the next
    compiled = list(compiled)
    sec["compile"] = " ".join(compiled) or "the harness's default"
    env = child_env({**ctx.env_extra,
                     **({"OMP_NUM_THREADS": max(1, ctx.cores // n)} if n > 1 else {})})
    sec.update(concurrency=n, data=ctx.data_kind, args=[*ctx.data_args, *extra],
               estimate_s=estimate_s, runs=[])
    queue = long_run_queue(ctx.smoke)
    running: list[tuple[Child, dict, Path]] = []
    while True:
        room = deadline - time.monotonic()
        while len(running) < n and room > 5:
            # the first n start whatever their chances (an unfinished run still tells its
            # epochs); a later one only if it can finish
            known = [r["wall_s"] for r in sec["runs"] if r.get("status") == "FINISHED"]
            need = max(known) if known else estimate_s
            if len(sec["runs"]) >= n and need and need > room:
                sec["not_started"] = f"the next run needs about {need:.0f} s, {room:.0f} s left"
                break
            item = next(queue, None)
            if item is None:
                break
            method, seed = item
            ws = ctx.work / "long" / f"{method}-s{seed}"
            child = start(ctx, f"long {method} s{seed}", ws,
                          [f"method={method}", f"seed={seed}", *extra, *compiled], env=env)
            record = {"method": method, "seed": seed, "status": "running",
                      "compile": " ".join(compiled) or None}
            sec["runs"].append(record)
            running.append((child, record, ws))
            ctx.say(f"long run {method} seed {seed} started")
        if not running:
            break
        time.sleep(0.5)
        for entry in list(running):
            child, record, ws = entry
            if child.running() and time.monotonic() < deadline:
                continue
            rc = child.wait(deadline, reason="budget end")
            record.update(describe(ctx, child, rc, ws))
            results = read_results(ws)
            if results is None:
                record["status"] = "killed at the budget's end" if child.kill_reason else "failed"
                record.update(read_checkpoint(ws) or {"epochs_done": 0})
                if "compile=false" not in compiled and not child.kill_reason:
                    ctx.notes.append(f"a long run failed ({' '.join(compiled) or 'defaults'}); "
                                     "the runs started after it are eager")
                    compiled = ["compile=false"]
            running.remove(entry)
            ctx.say(f"long run {record['method']} seed {record['seed']}: {record['status']}, "
                    f"{record.get('epochs_done')} epochs in {child.wall_s:.0f} s")
            save()
        if time.monotonic() >= deadline and not running:
            break
    sec["finished"] = sum(r.get("status") == "FINISHED" for r in sec["runs"])
    sec["started"] = len(sec["runs"])

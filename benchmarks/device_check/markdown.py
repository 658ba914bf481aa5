"""The readable summary of ``device_check.json``: a first line with PASS/FAIL per correctness
check, then one heading and a few small tables per section. Rendered from the JSON alone, after
every section, so a summary exists however far the check got."""

from __future__ import annotations


def fmt(value, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != 0 and (abs(value) < 10 ** -digits or abs(value) >= 1e7):
            return f"{value:.2e}"
        return f"{value:,.{digits}f}"
    return str(value)


def pct(value) -> str:
    return "–" if not isinstance(value, (int, float)) or isinstance(value, bool) \
        else f"{100 * value:.2f} %"


def table(header: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in rows]
    return out + [""]


def verdict(passed) -> str:
    """PASS, FAIL, or n/a: not measured (cut by a deadline, or bf16 on a CPU)."""
    return {True: "PASS", False: "FAIL"}.get(passed, "n/a")


def volume_passed(r: dict):
    if r.get("status") == "ok":
        return r.get("passed")
    return None if r.get("status") == "skipped" else False  # an error is a failure


def checks(data: dict) -> list[tuple[str, object]]:
    corr = data.get("sections", {}).get("correctness", {})
    volume = corr.get("volume_weights", {}).get("methods", {})
    out = [(f"volume weights {m}", volume_passed(r)) for m, r in volume.items()]
    if not volume:
        out.append(("volume weights", None))
    c = corr.get("checks", {})
    for key, label in (("resume", "kill-and-resume"), ("deterministic", "deterministic"),
                       ("precision", "bf16 on CUDA")):
        out.append((label, (c.get(key) or {}).get("passed")))
    return out


def render(data: dict) -> str:
    first = "Correctness: " + " · ".join(f"{label} {verdict(p)}" for label, p in checks(data))
    s = data.get("sections", {})
    lines = [first, "", f"# Device check: {data.get('device')}", "",
             f"torch {data.get('torch')}, Python {data.get('python')}, started "
             f"{data.get('started')}, budget {data.get('budget_s')} s, elapsed "
             f"{data.get('elapsed_s')} s{', smoke mode' if data.get('smoke') else ''}.", ""]
    for note in data.get("notes", []):
        lines.append(f"- {note}")
    lines.append("")
    lines += correctness(s.get("correctness", {}))
    lines += speed(s.get("speed", {}))
    lines += concurrency(s.get("concurrency", {}))
    lines += projection(s.get("projection", {}))
    lines += long_runs(s.get("long_runs", {}))
    if data.get("errors"):
        lines += ["## Errors", ""]
        for e in data["errors"]:
            lines.append(f"- {e.get('where')}: {e.get('type')}: {e.get('message')}")
        lines.append("")
    return "\n".join(lines)


def status_line(sec: dict) -> list[str]:
    text = f"Status: {sec.get('status', 'not run')}, {fmt(sec.get('elapsed_s'))} s."
    if sec.get("error"):
        text += f" Error: {sec['error'].get('type')}: {sec['error'].get('message')}"
    return [text, ""]


def correctness(sec: dict) -> list[str]:
    lines = ["## 1. Correctness", ""] + status_line(sec)
    volume = sec.get("volume_weights", {})
    if volume.get("methods"):
        lines += ["Class-volume weights, float32 logits on the device vs float64 on the CPU "
                  f"({volume.get('logits')}):", ""]
        lines += table(["method", "max rel. diff (weights)", "max rel. diff (raw)", "result"],
                       [[m, fmt(r.get("max_rel_diff"), 3), fmt(r.get("raw_max_rel_diff"), 3),
                         verdict(r.get("passed")) if r.get("status") == "ok" else r.get("status")]
                        for m, r in volume["methods"].items()])
    c = sec.get("checks", {})
    if c:
        rows = []
        for key in ("resume", "deterministic", "precision"):
            r = c.get(key) or {}
            detail = r.get("reason") or ""
            if "final_acc" in r:
                detail = f"final acc {r['final_acc']}; equal parts: {r.get('parts')} {detail}"
            if key == "precision":
                detail = f"precision=auto chose {r.get('found')} ({r.get('source')})"
            rows.append([key, verdict(r.get("passed")), detail])
        lines += [f"Runs through the CLI ({sec.get('data')}):", ""]
        lines += table(["check", "result", "detail"], rows)
    runs = sec.get("runs", {})
    if runs:
        lines += table(["run", "exit", "wall s", "epochs", "epoch s", "final top-1", "killed"],
                       [[k, r.get("exit"), fmt(r.get("wall_s")), r.get("epochs_done"),
                         fmt(r.get("epoch_s"), 2), pct(r.get("final_acc")), r.get("killed") or ""]
                        for k, r in runs.items()])
    if sec.get("data_prep"):
        lines += [f"Data preparation (decode into the cache): {fmt(sec['data_prep'].get('wall_s'))}"
                  f" s, exit {sec['data_prep'].get('exit')}.", ""]
    return lines


def speed(sec: dict) -> list[str]:
    lines = ["## 2. Speed (ResNet-32, batch 100, tensors on the device)", ""] + status_line(sec)
    variants = sec.get("variants", {})
    train = [(k, r) for k, r in variants.items() if r.get("kind") != "eval"]
    evals = [(k, r) for k, r in variants.items() if r.get("kind") == "eval"]
    if train:
        lines += table(["variant", "ms/step", "img/s", "compile s", "max abs Δ logits vs eager",
                        "status"],
                       [[k, fmt(r.get("ms_per_step"), 2), fmt(r.get("img_per_s"), 0),
                         fmt(r.get("compile_s")), fmt(r.get("max_abs_diff_logits"), 4)
                         + ("" if r.get("outputs_match") is None
                            else f" ({'ok' if r['outputs_match'] else 'MISMATCH'})"),
                         r.get("status") if r.get("status") == "ok"
                         else f"{r.get('status')}: {r.get('reason') or r.get('error')}"]
                        for k, r in train])
    if evals:
        lines += table(["evaluation (no_grad)", "img/s", "status"],
                       [[k, fmt(r.get("img_per_s"), 0), r.get("status")] for k, r in evals])
    lines += [f"Best eager: {sec.get('best_eager')}; best overall: {sec.get('best_overall')}."]
    if sec.get("compile_note"):
        lines.append(f"Note: {sec['compile_note']}.")
    return lines + [""]


def concurrency(sec: dict) -> list[str]:
    lines = ["## 2b. Concurrent processes on the one device", ""] + status_line(sec)
    levels = sec.get("levels", {})
    if levels:
        lines += [f"Variant {sec.get('variant', {}).get('name')}, window {sec.get('window_s')} s "
                  "per process, all windows started together at a file barrier.", ""]
        lines += table(["processes", "aggregate img/s", "speed-up vs 1", "per process img/s",
                        "GPU util % mean / max", "GPU MiB max", "status"],
                       [[k, fmt(r.get("aggregate_img_per_s"), 0), fmt(r.get("speedup_vs_1"), 2),
                         ", ".join(fmt(x, 0) for x in r.get("per_process_img_per_s", [])),
                         f"{fmt(r.get('gpu_util_mean'))} / {fmt(r.get('gpu_util_max'))}",
                         fmt(r.get("gpu_mem_max_mib"), 0),
                         r.get("status") if r.get("status") == "ok"
                         else f"{r.get('status')}: {r.get('reason', '')}"]
                        for k, r in levels.items()])
        lines += [f"Best concurrency: {sec.get('best_concurrency')}.", ""]
    return lines


def projection(sec: dict) -> list[str]:
    lines = ["## 3. Projection: 200-epoch paper_cifar runs (CIFAR-10-LT IF 100)", ""]
    lines += status_line(sec)
    rows = sec.get("rows", {})
    if rows:
        lines += [f"Best setting: {sec.get('best_setting')} ({fmt(1000 * sec['step_s'], 2)} ms/"
                  f"step), evaluation {fmt(sec.get('eval_img_per_s'), 0)} img/s "
                  f"({sec.get('eval_basis')}), {sec.get('concurrency')} runs at a time; "
                  f"per run once: compilation {fmt(sec.get('compile_s'))} s, start-up and data "
                  f"loading {fmt(sec.get('harness_startup_s'))} s.", ""]
        lines += table(["basis", "epoch s", "one run", "runs/hour", "30 runs from scratch",
                        "30 runs forked at 160"],
                       [[k, fmt(r["epoch_s"], 2), hours(r["run_s"]), fmt(r["runs_per_hour"], 1),
                         hours(r["comparison_s"]), hours(r["comparison_forked_s"])]
                        for k, r in rows.items()])
        lines += [f"Chosen: **{sec.get('chosen')}**, because {sec.get('why')}.", ""]
    return lines


def hours(seconds) -> str:
    if not isinstance(seconds, (int, float)):
        return "–"
    return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.2f} h"


def long_runs(sec: dict) -> list[str]:
    lines = ["## 4. Long runs with the time left", ""] + status_line(sec)
    runs = sec.get("runs", [])
    if runs:
        lines += [f"{sec.get('started')} started, {sec.get('finished')} finished, "
                  f"{sec.get('concurrency')} at a time, {sec.get('data')}.", ""]
        lines += table(["method", "seed", "status", "epochs", "final top-1", "best top-1",
                        "many", "medium", "few", "wall s"],
                       [[r.get("method"), r.get("seed"), r.get("status"), r.get("epochs_done"),
                         pct(r.get("final_acc")), pct(r.get("best_acc")), pct(r.get("many")),
                         pct(r.get("medium")), pct(r.get("few")), fmt(r.get("wall_s"))]
                        for r in runs])
    return lines

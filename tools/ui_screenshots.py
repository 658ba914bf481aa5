"""Screenshots of MLflow's UI after a real sweep, as docs/bench/ shows them (issue 37).

A sweep of 3 methods x 3 seeds on the generated data set (``synthetic_lt``, 10 classes at
imbalance 50, the quick protocol at batch 32: about 10 s a run, and the methods differ), then ``lt-bench ui`` and headless Chromium on what it printed:
the runs table, the chart view, a group run's page and the comparison picture.

    python tools/ui_screenshots.py [--out docs/bench] [--keep WORKSPACE]

Needs Debian's chromium and playwright (``.ci/install-browser``). About 3 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
METHODS = "[ce,effective_number,dv]"


def sweep(ws: Path) -> None:
    subprocess.run([sys.executable, "-m", "lt_bench", "sweep", "dataset=synthetic_lt",
                    "imbalance=50", "data.num_classes=10", f"methods={METHODS}", "seeds=3",
                    "jobs=1", "protocol=quick", "protocol.batch_size=32", "protocol.lr=0.05",
                    "device=cpu", f"workspace={ws}"], check=True)


def serve(ws: Path, port: int) -> tuple[subprocess.Popen, str]:
    """``lt-bench ui`` on ``port`` and the first runs link it prints."""
    proc = subprocess.Popen([sys.executable, "-m", "lt_bench", "ui", f"workspace={ws}", "--port",
                             str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    link = ""
    while not link:
        line = proc.stdout.readline()
        if not line:
            raise SystemExit("lt-bench ui stopped before printing a link")
        found = re.search(r"http://\S+/runs\?\S+", line)
        link = found.group(0) if found else ""
    for _ in range(240):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return proc, link
        except OSError:
            time.sleep(0.5)
    raise SystemExit("the MLflow server did not answer")


def shoot(link: str, out: Path) -> list[Path]:
    from playwright.sync_api import sync_playwright

    from lt_bench.tracking.ui_view import seen_once_script

    shots = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = browser.new_context(viewport={"width": 1600, "height": 900})
        context.add_init_script(seen_once_script())  # no pop-up races the clicks below
        page = context.new_page()
        page.goto(link, wait_until="domcontentloaded")
        first = page.locator(".ag-row").first
        first.wait_for(timeout=120_000)
        page.locator(".ag-row button").first.click()  # one group's seeds
        page.wait_for_timeout(1500)
        shots.append(out / "ui_runs_table.png")
        page.screenshot(path=shots[-1], clip={"x": 0, "y": 0, "width": 1600, "height": 560})
        page.goto(f"{link}&compareRunsMode=CHART", wait_until="domcontentloaded")
        page.locator(".js-plotly-plot .barlayer .point").first.wait_for(timeout=120_000)
        page.wait_for_timeout(1500)
        shots.append(out / "ui_charts.png")
        page.screenshot(path=shots[-1])
        # the one click docs/TRACKING.md asks for, from the GenAI view the bare address opens:
        # run pages reached from the table then open in the model-training view too
        page.goto(link.split("/runs?")[0], wait_until="domcontentloaded")
        page.get_by_text("Model training", exact=True).first.click()
        page.goto(link, wait_until="domcontentloaded")
        page.get_by_text("dv", exact=True).first.click(timeout=120_000)  # a group run's page
        page.get_by_text("Metrics", exact=False).first.wait_for(timeout=120_000)
        page.wait_for_timeout(2500)
        shots.append(out / "ui_group_run.png")
        page.screenshot(path=shots[-1])
        page.goto(link, wait_until="domcontentloaded")
        with page.context.expect_page(timeout=120_000) as opened:
            page.get_by_text("the comparison picture of the latest sweep").click()
        picture = opened.value
        picture.set_viewport_size({"width": 1600, "height": 1300})
        picture.locator("img[src^='blob:'], img[src*='comparison']").first.wait_for(
            timeout=120_000)
        picture.wait_for_timeout(2500)
        shots.append(out / "ui_comparison_picture.png")
        picture.screenshot(path=shots[-1])
        browser.close()
    return shots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/bench"))
    parser.add_argument("--keep", type=Path, help="the sweep's workspace (default: a temporary)")
    parser.add_argument("--port", type=int, default=5077)
    args = parser.parse_args()
    ws = args.keep or Path(tempfile.mkdtemp(prefix="lt-bench-ui-"))
    if not list(ws.glob("runs/*/results.json")):
        sweep(ws)
    proc, link = serve(ws, args.port)
    try:
        for path in shoot(link, args.out.resolve()):
            print(f"ui_screenshots: {path}")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()

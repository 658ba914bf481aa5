"""``lt_bench.tracking.ui_view`` in MLflow's UI: the percent columns, the view's tags read by the
installed UI, and a real headless Chromium on what `lt-bench ui` prints: the runs table in
the model-training view with percent values and no sweep-level row, one bar a method in the
chart view, the sweep's picture one click away, and where MLflow's own setting decides the view
(the bare experiment address, a run page), as docs/TRACKING.md says.

LT_BENCH_SCREENSHOTS=DIR keeps the screenshots there (docs/bench/ holds a set)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from test_commands_ui import (
    FINGERPRINT,
    SETTING,
    browser_test,
    installed_ui,
    log_seeds,
    store,
    ui_page,
)

from lt_bench.tracking.ui_view import percent_metrics


def test_percent_metrics_round_as_the_leaderboard_prints():
    seed = {"final/acc": 0.24000000000000002, "final/acc_many": 0.5, "best/acc": 0.3,
            "final/epoch": 7.0}
    assert percent_metrics(seed) == {"percent/acc": 24.0, "percent/acc_many": 50.0}
    group = {"final/acc_mean": 0.61234, "final/acc_std": 0.014142, "final/acc_few_mean": 0.1,
             "seeds": 2.0}
    assert percent_metrics(group) == {"percent/acc": 61.23, "percent/acc_std": 1.41,
                                      "percent/acc_few": 10.0}
    assert percent_metrics(seed, "best") == {"percent/acc": 30.0}


def test_the_view_tags_are_ones_the_installed_ui_reads():
    from lt_bench.tracking.ui_view import (
        KIND_TAG,
        MODEL_TRAINING,
        SEEN_ONCE,
        VIEW_METRICS,
        VIEW_TAG,
        WORKFLOW,
        experiment_tags,
    )

    js = installed_ui()
    assert f'"{KIND_TAG}"' in js  # the experiment kind, read and written by the UI
    assert f'CUSTOM_MODEL_DEVELOPMENT="{MODEL_TRAINING}"' in js  # its "Machine learning" kind
    assert 'MACHINE_LEARNING="machine_learning"' in js and '.get("workflowType")' in js
    assert WORKFLOW == "workflowType=machine_learning"
    assert '"mlflow.sharedViewState."' in js and VIEW_TAG.startswith("mlflow.sharedViewState.")
    saved = json.loads(experiment_tags()[VIEW_TAG])  # the envelope of a view saved by name
    assert "a string `name`, number `createdAt`, and string `state`" in js  # its parser's words
    assert isinstance(saved["name"], str) and isinstance(saved["createdAt"], int)
    view = json.loads(saved["state"])
    assert {"selectedColumns", "columnOrder", "columnWidths", "searchFilter", "runsHiddenMode",
            "compareRunCharts", "compareRunSections"} <= set(view)
    assert all(f'"{key}"' in js or f"{key}:" in js for key in view)  # the UI's own state keys
    assert view["runsHiddenMode"] in js and '"BAR"' in js
    for key, value in SEEN_ONCE.items():  # the pop-ups' memory that the browser tests preset
        name, version = key.rsplit("_v", 1)
        assert f'key:"{name}",version:{version}' in js and json.loads(value) in (True, False)
    assert view["selectedColumns"] == ["attributes.`Dataset`",
                                       *(f"metrics.`{key}`" for key in VIEW_METRICS)]
    assert {c["metricKey"] for c in view["compareRunCharts"]} == {
        "percent/acc", "percent/acc_many", "percent/acc_medium", "percent/acc_few"}


def cell(page, run_id: str, column: str) -> str:
    return page.locator(f'.ag-row[row-id="{run_id}"] [col-id="{column}"]').first.inner_text(
        timeout=60_000)


def shoot(page, name: str, **clip) -> None:
    if os.environ.get("LT_BENCH_SCREENSHOTS"):
        page.screenshot(path=Path(os.environ["LT_BENCH_SCREENSHOTS"]) / name,
                        **({"clip": clip} if clip else {}))


@browser_test
def test_the_printed_link_opens_percent_rows_bars_and_the_picture(tmp_path, template_db):
    from lt_bench.compare.leaderboard import leaderboard
    from lt_bench.compare.plot import write_figures
    from lt_bench.tracking.mlflow_artifacts import log_sweep_run
    from lt_bench.tracking.store import client, tracking_uri

    ws = store(tmp_path, template_db)
    accs = {"ce": [0.60, 0.62], "dv": [0.64, 0.66]}
    logged = {method: log_seeds(ws, method, a) for method, a in accs.items()}
    cfg = {"workspace": str(ws), "dataset": "cifar10_lt", "imbalance": 100.0,
           "backbone": {"name": "resnet32"}, "protocol": {"name": "quick"}, "method": {}}
    [png] = write_figures(leaderboard(cfg), ws, ws / "sweeps" / "comparison.png", suffix=True)
    sweep_run = log_sweep_run(cfg, [png])
    exp_id = client(tracking_uri(cfg)).get_run(sweep_run).info.experiment_id
    printed: list[str] = []
    with ui_page(ws, printed, lines=3, viewport={"width": 1600, "height": 900}) as (page, url):
        link = f"{url}/#/experiments/{exp_id}/runs?workflowType=machine_learning&" \
               "viewStateShareKey=lt-bench-v2"
        assert printed[1:] == ["lt-bench: the runs of each setting (open one):",
                               f"lt-bench:   {SETTING}: {link}"]
        page.goto(link, wait_until="domcontentloaded")
        group, seeds = logged["dv"]
        page.locator(f'.ag-row[row-id="{group}"]').first.wait_for(timeout=90_000)
        assert f"/#/experiments/{exp_id}/runs?" in page.url and "genai" not in page.url
        assert page.get_by_test_id("saved-views-trigger").inner_text() == "lt-bench: accuracy %"
        for method, (group_id, _) in logged.items():  # percent, as the leaderboard prints
            mean = 100 * sum(accs[method]) / 2
            assert cell(page, group_id, "metrics.`percent/acc`") == f"{mean:g}"
            assert cell(page, group_id, "metrics.`percent/acc_many`") == f"{mean + 20:g}"
            assert cell(page, group_id, "metrics.`percent/acc_std`") == "1.41"
        assert page.locator(f'.ag-row[row-id="{sweep_run}"]').count() == 0  # not a method
        page.locator(f'.ag-row[row-id="{group}"] button').first.click()  # expand its seeds
        for run_id, acc in zip(seeds, accs["dv"]):
            assert cell(page, run_id, "metrics.`percent/acc`") == f"{100 * acc:g}"
            row = " ".join(page.locator(f'.ag-row[row-id="{run_id}"]').all_inner_texts())
            assert f"{SETTING} ({FINGERPRINT[:8]}" in row  # the Dataset column
        shoot(page, "ui_runs_table.png", x=0, y=0, width=1600, height=520)

        page.goto(f"{link}&compareRunsMode=CHART", wait_until="domcontentloaded")
        section = page.get_by_text("accuracy % (final epoch)").first
        section.wait_for(timeout=90_000)
        bars = page.locator(".js-plotly-plot .barlayer .point")
        bars.first.wait_for(timeout=90_000)  # bars, not lines over steps
        assert bars.count() >= 2 * 3  # a bar a method in the overall, many and medium charts
        shoot(page, "ui_charts.png")

        page.goto(link, wait_until="domcontentloaded")
        with page.context.expect_page(timeout=60_000) as opened:
            page.get_by_text("the comparison picture of the latest sweep").click()
        picture = opened.value
        picture.locator("img[src^='blob:'], img[src*='comparison']").first.wait_for(
            timeout=90_000)
        assert picture.url.split("?")[0] == (f"{url}/#/experiments/{exp_id}/runs/{sweep_run}/"
                                             f"artifacts/{png.name}")
        fetched = picture.request.get(f"{url}/get-artifact?path={png.name}&run_uuid={sweep_run}")
        assert fetched.ok and fetched.body() == png.read_bytes()
        shoot(picture, "ui_comparison_picture.png")


@browser_test
def test_where_mlflows_own_setting_decides_the_view(tmp_path, template_db):
    """The bare experiment address and a run page follow the browser's own workflow setting
    (GenAI until "Model training" is clicked once from the GenAI view), not the experiment's
    kind tag: what docs/TRACKING.md tells users. If MLflow starts reading the tag, this test
    says so."""
    from lt_bench.tracking.store import client, tracking_uri

    ws = store(tmp_path, template_db)
    group, seeds = log_seeds(ws, "dv", [0.64, 0.66])

    exp_id = client(tracking_uri({"workspace": str(ws)})).get_run(group).info.experiment_id
    with ui_page(ws, viewport={"width": 1600, "height": 900}) as (page, url):
        page.goto(f"{url}/#/experiments/{exp_id}", wait_until="domcontentloaded")
        page.wait_for_url("**/overview**", timeout=90_000)  # MLflow's default: GenAI
        page.get_by_text("Detect Issues").first.wait_for(timeout=90_000)  # the GenAI overview
        page.get_by_text("Model training", exact=True).first.click()  # the one click
        page.wait_for_url(f"**/experiments/{exp_id}/runs**", timeout=90_000)
        assert page.evaluate("localStorage.getItem('mlflow.workflowType_v1')") == \
            '"machine_learning"'
        page.goto(f"{url}/#/experiments/{exp_id}", wait_until="domcontentloaded")
        page.wait_for_url(f"**/experiments/{exp_id}/runs**", timeout=90_000)  # kept
        page.goto(f"{url}/#/experiments/{exp_id}/runs/{seeds[0]}", wait_until="domcontentloaded")
        page.get_by_text("dv-seed0").first.wait_for(timeout=90_000)
        assert page.get_by_text("Evaluations", exact=True).count() == 0


@browser_test
def test_the_compare_page_plots_accuracy_first(tmp_path, template_db):
    """MLflow's compare-runs page plots the first metric its runs share, in the order the store
    first saw them; lt-bench logs accuracy first (it plotted ``train/loss``)."""
    from lt_bench.tracking.store import client, tracking_uri

    ws = store(tmp_path, template_db)
    _, seeds = log_seeds(ws, "dv", [0.64, 0.66])
    exp_id = client(tracking_uri({"workspace": str(ws)})).get_run(seeds[0]).info.experiment_id
    runs = json.dumps(seeds).replace(" ", "")
    with ui_page(ws, viewport={"width": 1600, "height": 900}) as (page, url):
        page.goto(f'{url}/#/compare-runs?runs={runs}&experiments=["{exp_id}"]',
                  wait_until="domcontentloaded")
        axes = page.locator(".js-plotly-plot .parcoords .axis-title")
        axes.first.wait_for(timeout=90_000)
        titles = [(t or "").strip() for t in axes.all_text_contents()]
        assert titles[-1] == "percent/acc", titles  # the metric axis, after the params'
        shoot(page, "ui_compare_runs.png")

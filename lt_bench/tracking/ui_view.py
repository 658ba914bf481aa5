"""The view lt-bench gives an experiment in MLflow's UI: its kind (model training), a saved view
of the accuracy columns in percent and of a bar chart a class group, and the address that opens
it on its runs table.

What MLflow 3.17's UI reads (its bundle, ``mlflow/server/js/build``), which decides the design:

* The view (GenAI or model training) comes from the address's ``workflowType`` and else from
  the browser's ``localStorage`` (``mlflow.workflowType_v1``; GenAI when unset); the experiment
  kind tag is written for the UI's kind selector but no longer decides the view. So every
  address lt-bench makes carries ``WORKFLOW``; the runs table's own links to run pages do not,
  and there the browser's setting decides (docs/TRACKING.md).
* The runs table shows a metric's raw value with every digit, so the accuracies are logged a
  second time in percent, rounded as the leaderboard prints them (``percent_metrics``).
* The chart view draws a metric as bars when every run's latest value sits at step 0, as
  lines otherwise: summaries are logged at step 0.
* A shared view is ignored when the address also carries a search parameter, so the filter that
  keeps the sweep-level run out of the method rows lives in the view, not in the link.
"""

from __future__ import annotations

import json
import time

#: the UI's experiment kind for model training ("Machine learning" in its kind selector;
#: "genai_development" is the GenAI one), and the address parameter that opens that view
KIND_TAG, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
WORKFLOW = "workflowType=machine_learning"
#: a new key for a changed view: an experiment keeps the view it was given
VIEW_KEY = "lt-bench-v2"  # the experiment tag below, and the links to it
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
VIEW_NAME = "lt-bench: accuracy %"
#: the accuracies in percent: a group row (a method's setting) shows the mean over its seeds
#: under the same column where its seed rows show their own value
PERCENT = "percent/"
GROUPS = ("acc", "acc_many", "acc_medium", "acc_few")
VIEW_METRICS = (f"{PERCENT}acc", f"{PERCENT}acc_std", "seeds",
                *(f"{PERCENT}{key}" for key in GROUPS[1:]))
#: the sweep-level run carries the comparison picture (linked from the description), no metric
NOT_A_METHOD = "tags.`lt.role` != 'sweep'"
#: the localStorage of a browser that has closed MLflow's Assistant (it opens by itself on a
#: first visit from localhost) and dismissed the Detect-Issues pop-up (a modal that takes every
#: click until dismissed). The screenshots tool and the browser tests start from it, so that
#: neither pop-up can race their clicks (both appear at times that vary from machine to machine)
SEEN_ONCE = {"mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true",
             "mlflow.assistant.panelOpen_v1": "false",
             "mlflow.detectIssues.guidanceShown_v1": "true"}


def seen_once_script() -> str:
    """JavaScript that writes ``SEEN_ONCE`` before the UI's own scripts read it."""
    return "".join(f"window.localStorage.setItem({json.dumps(k)}, {json.dumps(v)});"
                   for k, v in SEEN_ONCE.items())


def percent_metrics(values: dict[str, float], which: str = "final") -> dict[str, float]:
    """``percent/acc``, ``percent/acc_many`` … of ``which`` epoch's accuracies (fractions) in
    ``values`` (``final/acc`` …, or a group's ``final/acc_mean`` and ``final/acc_std``), rounded
    to 2 decimals as the leaderboard prints them (24.0, not 0.24000000000000002)."""
    out = {}
    for key in GROUPS:
        value = values.get(f"{which}/{key}", values.get(f"{which}/{key}_mean"))
        if value is not None:
            out[f"{PERCENT}{key}"] = round(100.0 * float(value), 2)
        if f"{which}/{key}_std" in values:
            out[f"{PERCENT}{key}_std"] = round(100.0 * float(values[f"{which}/{key}_std"]), 2)
    return out


def _charts() -> dict:
    """One section of bar charts, one a class group, of the runs' percent accuracy."""
    section = {"uuid": "lt-bench-accuracy", "name": "accuracy % (final epoch)",
               "display": True, "isReordered": False}
    cards = [{"uuid": f"lt-bench-{key}", "type": "BAR", "metricKey": f"{PERCENT}{key}",
              "metricSectionId": section["uuid"], "deleted": False, "isGenerated": False}
             for key in GROUPS]
    return {"compareRunSections": [section], "compareRunCharts": cards,
            "isAccordionReordered": True}


def experiment_tags() -> dict[str, str]:
    """The tags that open an experiment on its runs with the accuracy columns in view."""
    metrics = {f"metrics.`{key}`": 8 * len(key) + 24 for key in VIEW_METRICS}  # px: the name
    columns = ["attributes.`Dataset`", *metrics]
    view = {"selectedColumns": columns, "columnOrder": columns, "columnWidths": metrics,
            "searchFilter": NOT_A_METHOD, "runsHiddenMode": "SHOW_ALL", **_charts()}
    now = int(time.time() * 1000)  # a saved view's envelope: listed by name under "Views"
    saved = {"name": VIEW_NAME, "createdAt": now, "updatedAt": now, "state": json.dumps(view)}
    return {KIND_TAG: MODEL_TRAINING, VIEW_TAG: json.dumps(saved)}


def runs_link(base: str, experiment_id: str) -> str:
    """The address of an experiment's runs table in the model-training view, with the view."""
    return (f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{WORKFLOW}"
            f"&viewStateShareKey={VIEW_KEY}")

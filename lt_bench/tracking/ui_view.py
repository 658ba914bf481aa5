"""The view lt-bench gives an experiment in MLflow's UI: its kind (model training), a saved view
of the accuracy columns, and the address that opens it on its runs table."""

from __future__ import annotations

import json
import time

#: the UI's experiment kind for model training ("Machine learning" in its kind selector;
#: "genai_development" is the GenAI one), and the address parameter that opens that view
KIND_TAG, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
WORKFLOW = "workflowType=machine_learning"
#: a new key for a changed view: an experiment keeps the view it was given
VIEW_KEY = "lt-bench-v1"  # the experiment tag below, and the links to it
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
VIEW_NAME = "lt-bench: accuracy"
#: group rows (a method's configuration) carry the mean over seeds, seed rows their own numbers
VIEW_METRICS = ("final/acc_mean", "final/acc_std", "seeds", "final/acc_many_mean",
                "final/acc_medium_mean", "final/acc_few_mean", "final/acc", "final/acc_many",
                "final/acc_medium", "final/acc_few")


def experiment_tags() -> dict[str, str]:
    """The tags that open an experiment on its runs with the accuracy columns in view."""
    metrics = {f"metrics.`{key}`": 8 * len(key) + 24 for key in VIEW_METRICS}  # px: the name
    columns = ["attributes.`Dataset`", *metrics]
    view = {"selectedColumns": columns, "columnOrder": columns, "columnWidths": metrics}
    now = int(time.time() * 1000)  # a saved view's envelope: listed by name under "Views"
    saved = {"name": VIEW_NAME, "createdAt": now, "updatedAt": now, "state": json.dumps(view)}
    return {KIND_TAG: MODEL_TRAINING, VIEW_TAG: json.dumps(saved)}


def runs_link(base: str, experiment_id: str) -> str:
    """The address of an experiment's runs table in the model-training view, with the view."""
    return (f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{WORKFLOW}"
            f"&viewStateShareKey={VIEW_KEY}")

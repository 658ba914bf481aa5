"""What the MLflow UI shows of lt-bench beyond the seed runs' metrics.

* **The view.** MLflow 3 opens an experiment in its GenAI view (traces, an assistant); the runs
  and their accuracy are under "Model training". Every experiment lt-bench makes is tagged for
  model training (``mlflow.experimentKind``) and carries a view of its runs table with the
  accuracy columns (``mlflow.sharedViewState.<key>``, as the UI's own "Save view" stores one).
  The installed UI (3.17) chooses the view from the address, not from the tag, so ``runs_link``
  names both: ``…/#/experiments/ID/runs?workflowType=machine_learning&viewStateShareKey=KEY``.
* **The data.** ``dataset_input``: the training data as a run input, the data fingerprint as its
  digest, so that the runs table's Dataset column says what each run trained on.
* **Picture runs.** The sweep's comparison and a study's report are finished runs with a role
  tag other than ``seed`` (the leaderboard reads only ``lt.role=seed``); the experiment's
  description links to the latest one's picture, one click from the runs table.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any
from urllib.parse import quote

from lt_bench.config import to_dict
from lt_bench.tracking.base import tracker_name
from lt_bench.tracking.records import setting_tags
from lt_bench.tracking.store import (
    DB_NAME,
    TAG,
    artifact_root,
    attempts_for,
    client,
    ensure_experiment,
    get,
    is_remote,
    retry,
    setting_experiment,
    sqlite_path,
    timeout_of,
    tracking_uri,
    workspace,
)
from lt_bench.tracking.ui_view import WORKFLOW, runs_link

log = logging.getLogger(__name__)

NOTE_TAG = "mlflow.note.content"  # the experiment's description, shown above its runs table
NOTE_PREFIX = "lt-bench: "  # a description lt-bench wrote, and may write again
UI_DEFAULT = "http://127.0.0.1:5000"  # where `lt-bench ui` serves unless told otherwise


def ui_links(uri: str, base: str) -> list[tuple[str, str]]:
    """(name, runs link) of every lt-bench experiment holding runs in the store, by name; an
    experiment made before lt-bench marked them is marked now."""
    c = client(uri)
    attempts = attempts_for(uri)
    links = []
    for exp in retry(c.search_experiments, attempts=attempts):
        if f"{TAG}kind" not in exp.tags or not retry(
                c.search_runs, [exp.experiment_id], max_results=1, attempts=attempts):
            continue
        ensure_experiment(c, exp.name, None, uri)
        links.append((exp.name, runs_link(base, exp.experiment_id)))
    return sorted(links)


def sweep_links(cfgs: list) -> list[str]:
    """Lines that give each setting's runs table in the MLflow UI: on a tracking server at its
    own address, on a database at the address ``lt-bench ui`` serves it."""
    stores: dict[str, dict[str, Any]] = {}
    for cfg in cfgs:
        if tracker_name(cfg) == "mlflow":
            stores.setdefault(tracking_uri(cfg), {}).setdefault(setting_experiment(cfg), cfg)
    lines = []
    try:
        for uri, settings in stores.items():
            c, first = client(uri), next(iter(settings.values()))
            base, how = (uri, f"at {uri}") if is_remote(uri) else (
                UI_DEFAULT, f"after `lt-bench ui {ui_argument(uri, first)}`")
            lines.append(f"the runs in the MLflow UI ({how}), one link per setting:")
            for name in sorted(settings):
                exp = retry(c.get_experiment_by_name, name, attempts=attempts_for(uri))
                if exp is not None:
                    lines.append(f"  {name}: {runs_link(base, exp.experiment_id)}")
    except Exception as exc:  # a link must not fail a sweep whose runs are all done
        why = str(exc).splitlines()[0] if str(exc) else ""
        lines.append(f"the MLflow UI links could not be made ({type(exc).__name__}: {why})")
    return lines


def ui_argument(uri: str, cfg: Any) -> str:
    """What ``lt-bench ui`` is given to serve the database ``uri``; a server's URI may hold a
    password, so it is named, not printed."""
    if sqlite_path(uri) == workspace(cfg) / DB_NAME:
        return f"workspace={workspace(cfg)}"
    return f"tracking.uri={uri}" if sqlite_path(uri) else "tracking.uri=<this store's URI>"


def dataset_input(cfg: dict, info: dict, fingerprint: str | None):
    """The training data as an MLflow dataset input: named as the setting (the name runs logged
    before carry too), the data fingerprint (``lt_bench.workspace.provenance``) as digest, source
    ``data.root``, the counts as its profile; no images. "unknown": no fingerprint was kept."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    name = setting_experiment({**cfg, "tracking": {}})
    profile = {key: info[key] for key in ("num_classes", "total", "test_total", "imbalance",
                                          "groups", "sampler", "val_total", "meta_total")
               if info.get(key) is not None}
    profile.update(classes=info.get("classes"), train_counts=info.get("counts"),
                   test_counts=info.get("test_counts"))
    source = json.dumps({"uri": str(get(cfg, "data.root", "") or info.get("name") or name)})
    data = Dataset(name, str(fingerprint or "unknown"), "local", source,
                   profile=json.dumps(profile, default=str))
    return DatasetInput(data, [InputTag("mlflow.data.context", "train")])


def _artifact_run(resolved: dict, experiment: str, run_name: str, tags: dict,
                  paths: list[Path], what: str) -> str:
    uri = tracking_uri(resolved)
    mlflow_client = client(uri, timeout_of(resolved))
    exp_id = ensure_experiment(mlflow_client, experiment, artifact_root(resolved, uri), uri)
    attempts = attempts_for(uri)
    run_id = retry(mlflow_client.create_run, exp_id, run_name=run_name, tags=tags,
                   attempts=attempts).info.run_id
    for path in paths:
        retry(mlflow_client.log_artifact, run_id, str(path), attempts=attempts)
    retry(mlflow_client.set_terminated, run_id, "FINISHED", attempts=attempts)
    shown = next((p for p in paths if p.suffix == ".png"), paths[0] if paths else None)
    target = f"/{quote(shown.name)}" if shown else ""
    link = f"#/experiments/{exp_id}/runs/{run_id}/artifacts{target}?{WORKFLOW}"
    try:
        note = retry(mlflow_client.get_experiment, exp_id, attempts=attempts).tags.get(NOTE_TAG)
        if not note or note.startswith(NOTE_PREFIX):  # the user's own description stays
            retry(mlflow_client.set_experiment_tag, exp_id, NOTE_TAG,
                  f"{NOTE_PREFIX}[{what}]({link})", attempts=attempts)
    except Exception as exc:  # the run and its picture are in: a missing link is no failure
        log.warning("the description of experiment %s could not link run %s: %s",
                    experiment, run_id, exc)
    return run_id


def _resolved(cfg) -> dict:
    return to_dict(cfg) if not isinstance(cfg, dict) else cfg


def log_sweep_run(cfg, paths: list[Path]) -> str:
    """A sweep-level run (``lt.role=sweep``) in ``cfg``'s setting's experiment with ``paths``
    as artifacts."""
    resolved = _resolved(cfg)
    tags = {k: v for k, v in setting_tags(resolved).items()
            if k not in (f"{TAG}method", f"{TAG}cfg_hash")}  # it spans the methods
    return _artifact_run(resolved, setting_experiment(resolved), "sweep-comparison",
                         {**tags, f"{TAG}role": "sweep"}, paths,
                         "the comparison picture of the latest sweep")


def study_experiment(name: str) -> str:
    """A study spans settings, so its report has an experiment of its own."""
    return f"study-{name}"


def log_study_run(cfg, name: str, paths: list[Path]) -> str:
    """A study's report (``lt.role=study``) in the experiment ``study-NAME``."""
    return _artifact_run(_resolved(cfg), study_experiment(name), f"reproduce-{name}",
                         {f"{TAG}role": "study", f"{TAG}study": name}, paths,
                         f"the report of study {name}")

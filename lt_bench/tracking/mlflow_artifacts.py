"""Runs that carry pictures and reports, not training: the sweep's comparison and a study's
report. Each is a finished MLflow run with a role tag other than ``seed``, so the leaderboard,
which reads only ``lt.role=seed``, never counts it."""

from __future__ import annotations

from pathlib import Path

from lt_bench.tracking.store import (
    TAG,
    artifact_root,
    attempts_for,
    client,
    ensure_experiment,
    retry,
    setting_experiment,
    timeout_of,
    tracking_uri,
)


def _artifact_run(resolved: dict, experiment: str, run_name: str, tags: dict,
                  paths: list[Path]) -> str:
    uri = tracking_uri(resolved)
    mlflow_client = client(uri, timeout_of(resolved))
    exp_id = ensure_experiment(mlflow_client, experiment, artifact_root(resolved, uri), uri)
    attempts = attempts_for(uri)
    run_id = retry(mlflow_client.create_run, exp_id, run_name=run_name, tags=tags,
                   attempts=attempts).info.run_id
    for path in paths:
        retry(mlflow_client.log_artifact, run_id, str(path), attempts=attempts)
    retry(mlflow_client.set_terminated, run_id, "FINISHED", attempts=attempts)
    return run_id


def _resolved(cfg) -> dict:
    from lt_bench.config import to_dict

    return to_dict(cfg) if not isinstance(cfg, dict) else cfg


def log_sweep_run(cfg, paths: list[Path]) -> str:
    """A sweep-level run (``lt.role=sweep``) in ``cfg``'s setting's experiment with ``paths``
    as artifacts."""
    from lt_bench.tracking.mlflow_tracker import setting_tags

    resolved = _resolved(cfg)
    tags = {k: v for k, v in setting_tags(resolved).items()
            if k not in (f"{TAG}method", f"{TAG}cfg_hash")}  # it spans the methods
    return _artifact_run(resolved, setting_experiment(resolved), "sweep-comparison",
                         {**tags, f"{TAG}role": "sweep"}, paths)


def study_experiment(name: str) -> str:
    """A study spans settings, so its report has an experiment of its own."""
    return f"study-{name}"


def log_study_run(cfg, name: str, paths: list[Path]) -> str:
    """A study's report (``lt.role=study``) in the experiment ``study-NAME``."""
    return _artifact_run(_resolved(cfg), study_experiment(name), f"reproduce-{name}",
                         {f"{TAG}role": "study", f"{TAG}study": name}, paths)

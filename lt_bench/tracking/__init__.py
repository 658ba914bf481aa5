"""Experiment tracking: the ``Tracker`` interface and its read side (``base``), run records
(``records``), the MLflow tracker, its store and its bulk reader (``mlflow_tracker``, ``store``,
``mlflow_read``) and the artifacts it writes (``report``)."""

from lt_bench.tracking.base import (
    Tracker,
    cannot_read_back,
    prepare_stores,
    read_back,
    tracker_for,
    tracker_name,
)

__all__ = ["Tracker", "cannot_read_back", "prepare_stores", "read_back", "tracker_for",
           "tracker_name"]

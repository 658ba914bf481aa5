"""Experiment tracking: the ``Tracker`` interface (``base``), the MLflow tracker and its store
(``mlflow_tracker``, ``store``) and the artifacts it writes (``report``)."""

from lt_bench.tracking.base import Tracker

__all__ = ["Tracker"]

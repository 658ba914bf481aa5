"""The MLflow tracker ("mlflow"): runs, metrics and artifacts in an MLflow tracking store."""

import lt_bench


@lt_bench.hookimpl
def lt_bench_register_trackers(register):
    from lt_bench.tracking.mlflow_tracker import mlflow_tracker

    register("mlflow", mlflow_tracker)

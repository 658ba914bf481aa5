"""Fixtures shared by the tracking tests."""

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def template_db(tmp_path_factory) -> Path:
    """A migrated empty MLflow store, made once (MLflow's migrations take seconds) and copied."""
    from lt_bench.tracking.store import client

    path = tmp_path_factory.getbasetemp() / "mlflow-template" / "mlflow.db"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        client(f"sqlite:///{path}")
    return path


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch):
    """Tests never download: CIFAR's fetch fails as it does offline, unless a test replaces it."""
    def offline(variant, root):
        raise OSError("downloads are off in tests")

    monkeypatch.setattr("lt_bench.data.builders.fetch_cifar", offline)

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


@pytest.fixture
def overflows():
    """Whether anything a figure draws (title, labels, legend) reaches past its canvas: the
    drawn extent of every artist, in inches, against the figure's size."""
    def check(fig) -> bool:
        fig.canvas.draw()
        drawn = fig.get_tightbbox(fig.canvas.get_renderer())
        return (drawn.x0 < -0.01 or drawn.y0 < -0.01 or drawn.x1 > fig.get_figwidth() + 0.01
                or drawn.y1 > fig.get_figheight() + 0.01)
    return check

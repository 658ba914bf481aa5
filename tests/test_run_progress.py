"""A run's progress file: the fraction of its work it reports, written at most every few
seconds and read back as written."""

import pytest

from lt_bench.run.progress import RunProgress, fraction, read_progress


def test_fraction_counts_epochs_and_steps():
    assert fraction(None) == 0.0
    assert fraction({"epoch": 1, "epochs": 4, "step": 5, "steps": 10}) == pytest.approx(0.375)
    assert fraction({"epoch": 4, "epochs": 4, "step": 0, "steps": 10}) == 1.0


def test_run_progress_round_trips_and_throttles(tmp_path):
    p = RunProgress(tmp_path, epochs=3, steps_per_epoch=10)
    p.step(0, 1)
    p.step(0, 2)  # within WRITE_EVERY_S of the first: not written
    assert read_progress(tmp_path) == {"epoch": 0, "epochs": 3, "step": 1, "steps": 10,
                                       "acc": None}
    p.epoch_done(0, 0.25)  # always written
    assert read_progress(tmp_path)["epoch"] == 1 and read_progress(tmp_path)["acc"] == 0.25

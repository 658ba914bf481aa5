"""What the training loop tells a tracker. Trackers are plugins (``lt_bench_register_trackers``).

The loop itself always writes the run folder (config, checkpoint, ``history.jsonl``,
``results.json``); a tracker records the same run elsewhere (MLflow). Only rank 0 tracks.
"""

from __future__ import annotations

from pathlib import Path


class Tracker:
    """The tracker interface; this base records nothing beyond the run folder ("local")."""

    def start(self, cfg: dict, run_dir: Path, data_info: dict,
              resume_id: str | None = None) -> str | None:
        """Begin (or, given the id saved in the checkpoint, continue) a run; return its id."""
        return None

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Per-epoch metrics, ``step`` = the epoch (0-based)."""

    def finish(self, results: dict, status: str = "FINISHED") -> None:
        """Final and best metrics, per-class accuracy, weight trajectory; status FINISHED,
        FAILED or KILLED."""


def local_tracker(cfg) -> Tracker:
    """Only the run folder under the workspace (no external store)."""
    return Tracker()

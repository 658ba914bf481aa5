"""What a sweep says as its runs end, and the summary it returns."""

from __future__ import annotations

from lt_bench.sweep.jobs import Job
from lt_bench.workspace.record import RunResult


class Report:
    """One line per run as it ends, and the sweep's summary: which runs finished, failed, were
    finished already (skipped) or are being trained by another live process (busy)."""

    def __init__(self, metric: str, total: int, skipped: list[Job], todo: int, out, display):
        self.metric, self.todo, self.out, self.display, self.count = metric, todo, out, display, 0
        self.summary = {"total": total, "skipped": [j.label for j in skipped], "finished": [],
                        "failed": [], "busy": []}

    def __call__(self, job: Job, result: RunResult | None, seconds: float, note: str,
                 busy: bool = False) -> None:
        if self.display:  # its epochs are behind us, trained or not
            self.display.finished(job.epochs_to_train, run=not job.trunk_epochs)
        if job.trunk_epochs:
            self.out(f"[trunk] {job.label}: " + ("done" if not note else f"FAILED ({note})")
                     + f" ({seconds:.0f} s)")
            return
        self.count += 1
        prefix = f"[{self.count}/{self.todo}] {job.label}"
        if result is not None:
            score = result.score(self.metric)
            acc = "n/a" if score is None else f"{100 * score.acc:.2f}%"
            self.out(f"{prefix}: {self.metric} acc {acc} ({seconds:.0f} s)")
            self.summary["finished"].append(job.label)
        elif busy:
            self.out(f"{prefix}: skipped, {note} (another sweep on this workspace)")
            self.summary["busy"].append(job.label)
        else:
            self.out(f"{prefix}: FAILED ({note})")
            self.summary["failed"].append(job.label)

    def waiting(self, trunk: Job, owner: str) -> None:
        if trunk.label in self.summary.setdefault("waited", []):
            return
        self.summary["waited"].append(trunk.label)
        self.out(f"[trunk] {trunk.label}: being trained by {owner} (another sweep); its "
                 "branches start from it once it is done")

    def close(self) -> dict:
        if self.summary["failed"]:
            self.out(f"sweep: {len(self.summary['failed'])} run(s) failed; run the same sweep "
                     "again to retry them (finished runs are skipped)")
        if self.summary["busy"]:
            self.out(f"sweep: {len(self.summary['busy'])} run(s) are being trained by another "
                     "process; run the same sweep again once it is done to see them here")
        return self.summary

"""The "mlflow" tracker: every training run recorded in an MLflow tracking store.

Layout:

* one **experiment** per benchmark setting (``cifar10_lt-IF100-resnet32``), unless
  ``tracking.experiment`` names one;
* one **group run** (parent, tag ``lt.role=group``) per (method, config hash without the seed),
  carrying the mean and std over its finished seeds (``final/acc_mean``, ``final/acc_std``,
  ``seeds`` …, logged at ``step`` = number of seeds, so the latest value is the most complete),
  and in percent for the UI (``percent/acc``, ``percent/acc_std`` …; ``ui_view``) at step 0;
* one **seed run** (child, ``lt.role=seed``) per seed, with the flattened resolved config as
  params, per-epoch metrics at ``step=epoch``, ``final/*`` and ``best/*`` metrics (and the final
  accuracies as ``percent/*``), the training data as an input once finished (its fingerprint as
  digest, the counts; no images; its group gets it too) and the artifacts of
  ``lt_bench.tracking.report``.

Tags on both: ``lt.method``, ``lt.dataset``, ``lt.imbalance``, ``lt.backbone``, ``lt.protocol``,
``lt.cfg_hash`` (seed runs: ``lt.seed``, and once finished ``records.tags_of``).
Resuming (``start`` with the id saved in the checkpoint) continues the same MLflow run. The read
side (``finished_runs``, ``runs_for_leaderboard``) reads finished seed runs back (``mlflow_read``).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from lt_bench.config import flatten
from lt_bench.errors import LtBenchError
from lt_bench.tracking.base import Tracker
from lt_bench.tracking.mlflow_artifacts import dataset_input
from lt_bench.tracking.mlflow_read import group_summary, load_runs
from lt_bench.tracking.outbox import Outbox, describe
from lt_bench.tracking.records import (
    config_labels,
    number,
    setting_tags,
    summary_metrics,
    tags_of,
)
from lt_bench.tracking.report import write_report
from lt_bench.tracking.store import (
    TAG,
    artifact_root,
    attempts_for,
    client,
    ensure_experiment,
    get,
    gone,
    prepare_store,
    reason,
    retry,
    search_all,
    setting_experiment,
    sqlite_path,
    store_lock,
    timeout_of,
    tracking_uri,
    unless_gone,
    unreachable,
)
from lt_bench.tracking.ui_view import percent_metrics
from lt_bench.workspace.layout import CHECKPOINT, RESULTS
from lt_bench.workspace.record import RunResult

log = logging.getLogger(__name__)

MAX_PARAM_VALUE = 6000  # mlflow.utils.validation.MAX_PARAM_VAL_LENGTH
MAX_KEY = 250
MAX_TAG_VALUE = 8000
BATCH_PARAMS = 100
PARENT_TAG = "mlflow.parentRunId"
#: tries of ``settle_group`` when a group is deleted under it by a racing process
GROUP_TRIES = 5


def param_value(value: Any) -> str:
    """A param value as MLflow stores it, cut to its length limit with a visible marker."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if len(text) > MAX_PARAM_VALUE:
        marker = f"...[{len(text)} chars, cut]"
        text = text[:MAX_PARAM_VALUE - len(marker)] + marker
    return text


def config_params(cfg: dict, drop: tuple[str, ...] = ()) -> dict[str, str]:
    """The flattened config as MLflow params (``protocol.lr`` → ``"0.1"``)."""
    return {k[:MAX_KEY]: param_value(v) for k, v in flatten(cfg).items() if k not in drop}


def quote(value: str) -> str:
    return "'" + str(value).replace("'", "\\'") + "'"


#: logged before the other metrics of a batch: the compare-runs page of MLflow's UI plots the
#: first metric key its runs share, in the order the store first saw them (docs/TRACKING.md)
FIRST_LOGGED = ("test/acc", "percent/acc")


def same_setting(role: str, tags: dict) -> str:
    """The search filter for the ``role`` runs of ``tags``' (method, config hash)."""
    return (f"tags.`{TAG}role` = '{role}' and tags.`{TAG}cfg_hash` = "
            f"{quote(tags[TAG + 'cfg_hash'])} and tags.`{TAG}method` = "
            f"{quote(tags[TAG + 'method'])}")


class MlflowTracker(Tracker):
    """Records the run in MLflow (``tracking.uri``; default ``sqlite:///<workspace>/mlflow.db``)."""

    #: how long ``finish`` keeps trying a server that is away before the run finishes locally
    finish_wait_s = 30.0

    def __init__(self, cfg):
        super().__init__(cfg)
        self.uri = tracking_uri(cfg)
        self.run_id: str | None = None
        self.exp_id: str | None = None
        self.group_id: str | None = None
        self.resolved: dict | None = None
        self.data_info: dict = {}
        self.run_dir: Path | None = None
        self._client = None
        # a server can go away mid-run and come back; a database file cannot, and keeps the
        # plain path (its lock contention is retried in ``_call``)
        self.remote = self.uri.startswith(("http://", "https://"))
        self.outbox = Outbox(self.uri, lambda ms: self._log_batch(self.run_id, metrics=ms)) \
            if self.remote else None

    # -- plumbing --------------------------------------------------------------------------------
    @property
    def client(self):
        if self._client is None:
            self._client = client(self.uri, timeout_of(self.cfg))
        return self._client

    def _call(self, method: str, *args, **kwargs):
        return retry(getattr(self.client, method), *args, attempts=attempts_for(self.uri),
                     **kwargs)

    def _log_batch(self, run_id: str, metrics=(), params=(), tags=()) -> None:
        from mlflow.entities import Param, RunTag

        params = [Param(k, v) for k, v in dict(params).items()]
        tags = [RunTag(k, str(v)[:MAX_TAG_VALUE]) for k, v in dict(tags).items()]
        for i in range(0, max(len(params), len(tags), 1), BATCH_PARAMS):
            self._call("log_batch", run_id, params=params[i:i + BATCH_PARAMS],
                       tags=tags[i:i + BATCH_PARAMS])
        metrics = list(metrics)
        for i in range(0, len(metrics), 1000):
            self._call("log_batch", run_id, metrics=metrics[i:i + 1000])

    @staticmethod
    def _metrics(values: dict, step: int, timestamp: int | None = None):
        from mlflow.entities import Metric

        ts = timestamp or int(time.time() * 1000)
        # accuracy first: MLflow's compare page plots the first metric its runs logged
        ordered = sorted(values.items(), key=lambda kv: kv[0] not in FIRST_LOGGED)
        return [Metric(k[:MAX_KEY], float(v), ts, int(step)) for k, v in ordered
                if number(v) is not None]

    # -- the tracker interface ------------------------------------------------------------------
    def start(self, cfg: dict, run_dir: Path, data_info: dict,
              resume_id: str | None = None) -> str | None:
        self.resolved, self.data_info = cfg, data_info or {}
        self.run_dir = Path(run_dir)
        self.exp_id = exp_id = ensure_experiment(self.client, setting_experiment(cfg),
                                                 artifact_root(cfg, self.uri), self.uri)
        tags = setting_tags(cfg)
        if resume_id and self._resume(resume_id):
            return self.run_id
        self.group_id = self._ensure_group(exp_id, cfg, tags)
        seed = cfg.get("seed", 0)
        trunk = get(cfg, "fork.trunk")  # a branch of lt_bench.run.fork: the trunk it came from
        run = self._call("create_run", exp_id, run_name=f"{tags[TAG + 'method']}-seed{seed}",
                         tags={**tags, f"{TAG}role": "seed", f"{TAG}seed": str(seed),
                               PARENT_TAG: self.group_id, f"{TAG}run_dir": str(run_dir),
                               **({f"{TAG}trunk": str(trunk)} if trunk else {})})
        self.run_id = run.info.run_id
        self._log_batch(self.run_id, params=config_params(cfg))
        self._log_dataset(self.data_info)
        return self.run_id

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if self.run_id is None:
            return
        batch = self._metrics(metrics, step)
        try:
            if self.outbox is not None:
                self.outbox.put(batch, step)  # kept, not lost, while the server is away
            else:
                self._log_batch(self.run_id, metrics=batch)
        except Exception as exc:  # a tracking hiccup must not end hours of training
            log.warning("lt-bench: MLflow could not log epoch %s metrics: %s", step, exc)

    def finish(self, result: RunResult | None, status: str = "FINISHED") -> None:
        if self.run_id is None:
            return
        done = status == "FINISHED" and result is not None and result.final is not None
        values = summary_metrics(result) if done else {}
        summary = self._metrics({**values, **percent_metrics(values)}, step=0) if done else []
        parts = []  # (what the store lacks if this part is not done, the part)
        if done:
            parts += [("the tags of its provenance", lambda: self._log_batch(self.run_id, tags={
                f"{TAG}best_chosen_on": result.best_chosen_on, **tags_of(result.provenance)})),
                ("the data set as an input", lambda: self._log_input(result)),
                ("the artifacts", lambda: self._log_report(result))]
        parts.append((f"the run's status {status}",
                      lambda: self._call("set_terminated", self.run_id, status)))
        if self.group_id:  # a failed seed ends its group too, unless another seed finished
            parts.append(("the group's mean, std and status",
                          lambda: self.settle_group(status)))
        if self.outbox is None:
            if summary:
                self._log_batch(self.run_id, metrics=summary)
            for _, part in parts:
                part()
            return
        # a failed or interrupted run gets one try: its user is waiting for the error
        self._finish_remote(summary, parts, self.finish_wait_s if done else 0.0, status)

    def _log_report(self, result: RunResult) -> None:
        with tempfile.TemporaryDirectory(prefix="lt-bench-artifacts-") as tmp:
            write_report(result, self.resolved, Path(tmp))
            self._call("log_artifacts", self.run_id, tmp)

    def _finish_remote(self, summary: list, parts: list, wait_s: float, status: str) -> None:
        """Close the run on a server that may be away. The harness has written the run folder
        before this, so a server still away after ``wait_s`` is one line, never an error."""
        self.outbox.queue(summary, step=0, summary=True)
        if not self.outbox.drain(wait_s):
            missing = [describe(self.outbox.pending)] + [what for what, _ in parts]
            return self._ended_locally(self.outbox.last_error, missing, status)
        for i, (_, part) in enumerate(parts):
            try:
                part()
            except Exception as exc:
                if not unreachable(exc):
                    raise
                return self._ended_locally(exc, [what for what, _ in parts[i:]], status)

    def _ended_locally(self, error: BaseException | None, missing: list[str],
                       status: str) -> None:
        # results.json exists only for a finished run; the checkpoint's history has every
        # epoch's metrics either way
        name = RESULTS if status == "FINISHED" else f"{CHECKPOINT} (its history)"
        where = self.run_dir / name if self.run_dir else f"the run folder's {name}"
        listed = ", ".join(missing[:-1]) + " and " + missing[-1] if len(missing) > 1 else missing[0]
        log.warning("lt-bench: the MLflow server %s is away (%s), so the run %s locally: %s are "
                    "not in the store; the run's metrics are all in %s", self.uri,
                    reason(error) if error else "no answer",
                    "finished" if status == "FINISHED" else f"ended {status}", listed, where)

    # -- the read side ---------------------------------------------------------------------------
    def prepare(self) -> None:
        prepare_store(self.cfg)

    def finished_runs(self) -> set[tuple[str, str, int]] | None:
        db = sqlite_path(self.uri)
        if db is not None and not db.exists():
            return set()  # nothing recorded yet (reading would say "no tracking store")
        return super().finished_runs()

    def runs_for_leaderboard(self, experiment: str | None = None) -> list[dict] | None:
        return load_runs(self.cfg, experiment)

    # -- runs ------------------------------------------------------------------------------------
    def _resume(self, run_id: str) -> bool:
        try:
            run = self._call("get_run", run_id)
        except Exception:
            return False  # another store, or the run was removed: start afresh
        if run.info.lifecycle_stage == "deleted":
            return False
        self._call("update_run", run_id, status="RUNNING")
        self.run_id, self.exp_id = run_id, run.info.experiment_id
        self.group_id = run.data.tags.get(PARENT_TAG)
        return True

    def _live_groups(self, exp_id: str, tags: dict) -> list:
        """The live group runs of ``tags``' (method, config hash), the oldest first: the first is
        the group, later ones are duplicates of racing creators."""
        runs = self._call("search_runs", [exp_id], same_setting("group", tags), max_results=50,
                          order_by=["attributes.start_time ASC"])
        return sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))

    def _ensure_group(self, exp_id: str, cfg: dict, tags: dict) -> str:
        """The group run of (method, config hash): found, or created; a creator that then sees an
        older one deletes its own. On a server (no ``store_lock``) a creation in flight can still
        turn out older than a group already returned, hence ``settle_group`` at the seed's end."""
        with store_lock(self.uri):
            found = self._live_groups(exp_id, tags)
            if found:
                return found[0].info.run_id
            run = self._call("create_run", exp_id, run_name=tags[TAG + "method"],
                             tags={**tags, f"{TAG}role": "group"})
            mine = run.info.run_id
            found = self._live_groups(exp_id, tags)
            winner = found[0].info.run_id if found else mine
            if winner != mine:
                unless_gone(self._call, "delete_run", mine)
            else:  # a settler that saw an older group may have deleted it already
                unless_gone(self._log_batch, mine, params=config_params(cfg, drop=("seed",)))
                self._name_groups(exp_id, tags[TAG + "method"])
            return winner

    def _name_groups(self, exp_id: str, method: str) -> None:
        """Name the groups of ``method`` as the leaderboard names its rows
        (``records.config_labels``): the method alone while it has one setting here, else
        the keys that tell its settings apart (``dv (convention=authors)``), never a hash."""
        groups = search_all(self.client, [exp_id], f"tags.`{TAG}role` = 'group' and "
                                                   f"tags.`{TAG}method` = {quote(method)}")
        names = config_labels(method, {g.data.tags.get(f"{TAG}cfg_hash", ""): g.data.params
                                       for g in groups})
        for g in groups:
            name = names[g.data.tags.get(f"{TAG}cfg_hash", "")]
            if g.info.run_name != name:
                unless_gone(self._call, "set_tag", g.info.run_id, "mlflow.runName", name)

    def _log_dataset(self, info: dict) -> None:
        """The data set's summary as the tag ``lt.data``; the data itself becomes an input at
        the end (``_log_input``), when its fingerprint is known."""
        summary = {k: v for k, v in info.items() if k not in ("classes", "counts", "test_counts")}
        self._call("set_tag", self.run_id, f"{TAG}data",
                   json.dumps(summary, default=str)[:MAX_TAG_VALUE])

    def _log_input(self, result: RunResult) -> None:
        """The training data as an input of the seed run and of its group, whose row is the one
        the runs table shows: its Dataset column then says what each trained on."""
        try:
            data = dataset_input(self.resolved, self.data_info,
                                 (result.provenance or {}).get("data_fingerprint"))
            for run_id in dict.fromkeys(filter(None, (self.run_id, self.group_id))):
                unless_gone(self._call, "log_inputs", run_id, datasets=[data])
        except Exception as exc:  # metadata only: never fail a run over it
            if unreachable(exc):
                raise
            log.warning("MLflow could not record the run's data set: %s", exc)

    def settle_group(self, status: str = "FINISHED") -> dict[str, float]:
        """Make this seed's group true: the oldest live group of its (method, config hash) is
        the group; every seed of it points there, duplicates are deleted, and the group gets the
        mean and std (ddof=1) over its finished seeds at ``step`` = their number, so the latest
        value is the most complete. Its status: FINISHED once a seed finished, else ``status``.
        Resolved afresh at each try, as a racing creator or settler may delete a group between
        two calls ("must be in the 'active' state")."""
        for attempt in range(GROUP_TRIES):
            try:
                return self._settle_group(status)
            except Exception as exc:
                if attempt == GROUP_TRIES - 1 or not gone(exc):
                    raise
        raise AssertionError("unreachable")

    def _settle_group(self, status: str) -> dict[str, float]:
        tags = setting_tags(self.resolved)
        groups = self._live_groups(self.exp_id, tags)
        group = groups[0].info.run_id if groups else \
            self._ensure_group(self.exp_id, self.resolved, tags)  # deleted by hand meanwhile
        self.group_id = group
        seeds = search_all(self.client, [self.exp_id], same_setting("seed", tags))
        for run in seeds:
            if run.data.tags.get(PARENT_TAG) != group:
                self._call("set_tag", run.info.run_id, PARENT_TAG, group)
        for duplicate in groups[1:]:
            unless_gone(self._call, "delete_run", duplicate.info.run_id)
        finished = [r for r in seeds if r.info.status == "FINISHED"]
        summary = group_summary(finished)
        seeds_done = int(summary["seeds"])
        if seeds_done:
            # percent at step 0 (one bar a group in the chart view), stamped with the end of
            # its latest seed, so that the summary of more seeds is always the latest value
            latest = max(r.info.end_time or 0 for r in finished) or None
            self._log_batch(group, metrics=[
                *self._metrics(percent_metrics(summary), step=0, timestamp=latest),
                *self._metrics({k: float(f"{v:.7g}") for k, v in summary.items()},  # no float
                               step=seeds_done)])                        # noise on its page
        self._call("set_terminated", group, "FINISHED" if seeds_done else status)
        return summary


def mlflow_tracker(cfg) -> Tracker:
    """MLflow: the workspace's SQLite store by default, any server via tracking.uri."""
    # find_spec, not import: importing MLflow takes seconds, and the leaderboard's bulk SQL read
    # builds this tracker without ever needing MLflow itself
    if importlib.util.find_spec("mlflow") is None:  # a bare GPU machine: mlflow is not there
        raise LtBenchError("tracking.tracker=mlflow needs MLflow: pip install 'mlflow>=3', "
                           "or pass tracking.tracker=local to keep only the run folder") from None
    return MlflowTracker(cfg)


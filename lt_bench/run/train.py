"""One training run: config → data → backbone → method → training loop → tracker.

Read top to bottom, like torchvision's reference ``train.py``: the parts come from
``lt_bench.run.assemble``, each epoch is ``loop.train_one_epoch`` then ``loop.evaluate_epoch``, and
``checkpoint.RunState`` saves and restores all a run needs. Runs under ``torchrun`` use
DistributedDataParallel; the criterion all-reduces its own statistics in ``end_epoch``.
"""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from lt_bench.config import config_hash, to_dict
from lt_bench.config.checks import schedule_warnings
from lt_bench.data import DataConfig, groups, load_data
from lt_bench.data.groups import thresholds_of
from lt_bench.device import cpu_memory
from lt_bench.device.bf16_fence import Bf16Fence
from lt_bench.device.cpu_threads import EVERY_STEPS, FairThreads
from lt_bench.device.cpu_variant import Choice
from lt_bench.device.defaults import resolve_precision
from lt_bench.errors import LtBenchError
from lt_bench.registry import get_registry
from lt_bench.run import assemble as parts
from lt_bench.run import fork, loop
from lt_bench.run.assemble import RunMethod
from lt_bench.run.checkpoint import RunState, remove_stale_temporaries
from lt_bench.run.interrupts import held, terminate_as_interrupt
from lt_bench.run.lookahead import meta_batches
from lt_bench.run.progress import RunProgress
from lt_bench.workspace import provenance
from lt_bench.workspace.files import write_file
from lt_bench.workspace.layout import checkpoint_file, config_file, results_file, run_folder
from lt_bench.workspace.ownership import claim_run
from lt_bench.workspace.record import RunResult, finished_result, from_history

log = logging.getLogger(__name__)


@dataclass
class Run:
    """What every epoch of one run shares."""

    cfg: DictConfig
    data: Any
    model: torch.nn.Module  # as trained: DDP- and compile-wrapped where they apply
    tracker: Any
    out_dir: Path
    rank: int
    world_size: int
    steps_per_epoch: int
    drop_last: bool
    autocast: Any
    bar: Any
    progress: RunProgress
    until: int  # the epoch training stops after: the protocol's last, or the trunk's
    is_trunk: bool  # a trunk (lt_bench.run.fork): no record of its own, a mark when done
    memory_format: torch.memory_format = torch.contiguous_format
    fence: Bf16Fence | None = None  # on a single-process CPU run in bf16
    threads: FairThreads | None = None  # a single-process CPU run's threads, kept fair


def train(cfg: DictConfig, trunk: str | None = None) -> RunResult:
    """Train and evaluate one run (one seed); return its record (also in results.json).

    With ``trunk`` (a folder ``train_trunk`` filled) a run without a checkpoint of its own starts
    where the trunk stopped, exactly as if it had trained those epochs itself.
    """
    return claim_and_train(cfg, run_folder, trunk=trunk)


def train_trunk(cfg: DictConfig, epochs: int) -> None:
    """Train the trunk of ``cfg``'s group: ``epochs`` epochs of plain cross-entropy
    (``lt_bench.run.fork``); a finished trunk is left as it is."""
    folder = fork.trunk_folder(cfg, epochs)
    if cfg.resume and fork.finished_trunk(folder, epochs):
        return None
    fork.forget_mark(folder, cfg.resume)
    return claim_and_train(fork.trunk_config(cfg), lambda c: fork.trunk_folder(c, epochs),
                           stop_after=epochs)


def claim_and_train(cfg: DictConfig, folder_of, trunk: str | None = None,
                    stop_after: int | None = None) -> RunResult | None:
    """Check the config before any data loads, claim the folder ``folder_of(cfg)``, and train.

    ``stop_after``: train that many epochs only, as a trunk (``lt_bench.run.fork``): the folder then
    gets the trunk's mark instead of a record, and the tracker records nothing.
    """
    rank, world_size, device = parts.setup_distributed(cfg.device)
    get_registry(cfg.plugins)
    method = parts.check_names(cfg)  # the run's method, resolved once and handed down
    # Before the data: a workspace that cannot be written fails in one line now, not after
    # minutes of decoding; so does a run another live process is training.
    if rank == 0:
        for line in schedule_warnings(cfg):
            log.warning("%s", line)
        parts.check_writable(Path(cfg.workspace).expanduser())
    out_dir = folder_of(cfg)
    with claim_run(out_dir, enabled=rank == 0), terminate_as_interrupt():
        return build_and_train(cfg, method, out_dir, rank, world_size, device, trunk,
                               stop_after)


def build_and_train(cfg: DictConfig, method: RunMethod, out_dir: Path, rank: int,
                    world_size: int, device: torch.device, trunk: str | None = None,
                    stop_after: int | None = None) -> RunResult | None:
    """Build the run's parts in its claimed folder, then train its epochs (see
    ``claim_and_train``); a finished run is returned as it is, unless ``resume=false``."""
    say = announcer(cfg, rank == 0)
    if cfg.resume and not stop_after and (done := finished_result(results_file(out_dir))):
        say(f"{out_dir} already finished; pass resume=false to train again")
        return done
    run, state, precision, branched = build_run(cfg, method, out_dir, rank, world_size, device,
                                                say, trunk, stop_after)
    return train_epochs(run, state, precision, branched)


def announcer(cfg: DictConfig, is_main: bool):
    def say(line: str) -> None:
        if is_main and not cfg.quiet:
            print(f"lt-bench: {line}")
    return say


def build_run(cfg: DictConfig, method: RunMethod, out_dir: Path, rank: int, world_size: int,
              device: torch.device, say, trunk: str | None,
              stop_after: int | None) -> tuple[Run, RunState, str, bool]:
    """The run's parts, resumed from its checkpoint or branched from ``trunk`` where due:
    (the run, its state, the precision it trains in, whether it branched)."""
    is_main = rank == 0
    parts.seed_everything(cfg.seed, cfg.deterministic)
    precision, why = resolve_precision(cfg.precision, device)
    say(f"precision: {precision} ({why})")
    tracker = (fork.trunk_tracker() if stop_after else parts.build_tracker(cfg)) if is_main \
        else None  # fails now if it cannot start

    data = load_data(cfg.dataset, cfg.imbalance, DataConfig(**to_dict(cfg.data)))
    if data.source_line:
        say(data.source_line)
    parts.check_needs(cfg, method, data, world_size)
    model = parts.build_model(cfg, method, data, device)
    p = cfg.protocol
    # A last batch of one sample would break BatchNorm in training mode: drop it then.
    drop_last = data.samples_per_rank(world_size) % p.batch_size == 1
    steps = data.num_train_batches(p.batch_size, world_size, drop_last)
    optimizer = parts.build_optimizer(model, p, device)
    state = RunState(model, optimizer, parts.build_schedule(optimizer, steps, p),
                     parts.build_criterion(method, data, device), device)
    branched = resume_or_start(state, cfg, out_dir, is_main, say, trunk,
                               provenance.data_fingerprint(data)["data_fingerprint"])
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16"
                else nullcontext())
    # deterministic=true promises the same bits from run to run: another thread count would
    # sum in another order, so such a run keeps its threads
    threads = FairThreads(torch.get_num_threads()) if device.type == "cpu" and \
        world_size == 1 and not cfg.deterministic else None
    threads_line = f"; {threads.start()}" if threads else ""  # before the probe: it times them
    if device.type == "cpu":  # before the probe too: scoring ran 1.3x faster so on the AMX Xeon
        threads_line += f"; {cpu_memory.keep_freed_memory()}"
    choice = variant_of(state, cfg, data, device, precision, world_size, autocast)
    say(f"variant: {choice.describe()}{threads_line}")
    model.to(memory_format=choice.memory_format)
    until = stop_after or p.epochs
    run = Run(cfg, data, parts.wrap_for_training(model, cfg, device, world_size, say, choice),
              tracker, out_dir, rank, world_size, steps, drop_last, autocast, None,
              RunProgress(out_dir, until, steps, enabled=is_main), until, bool(stop_after),
              choice.memory_format,
              Bf16Fence(model) if precision == "bf16" and device.type == "cpu"
              and world_size == 1 else None, threads)
    return run, state, precision, branched


def train_epochs(run: Run, state: RunState, precision: str, branched: bool) -> RunResult | None:
    """Train from ``state``'s next epoch to ``run.until``, then write the run's record (a
    trunk: its mark); a run that fails or is killed is recorded so by its tracker."""
    is_main = run.rank == 0
    status = "FAILED"
    try:
        with held():  # a tracker run, once created, is always closed by the finally below
            if is_main:
                start_tracking(run, state, precision, branched)
        run.bar = step_bar(run.cfg, run.steps_per_epoch, state.next_epoch, is_main, run.until)
        for epoch in range(state.next_epoch, run.until):
            run_epoch(run, state, epoch)
        if run.is_trunk:
            status = "FINISHED"
            if is_main:
                fork.mark_finished(run.out_dir, run.until)
            return None
        with held():  # results.json and the tracker's FINISHED, both or neither
            result = finish(run, state, precision)
            status = "FINISHED"
        return result
    except KeyboardInterrupt:
        if status != "FINISHED":  # a signal held over the finish stops a finished run
            status = "KILLED"
        raise
    finally:
        if run.bar is not None:
            run.bar.close()
        if run.threads is not None:
            run.threads.restore()
        if status != "FINISHED" and is_main:
            record_failure(run.tracker, status)


def variant_of(state: RunState, cfg: DictConfig, data, device: torch.device, precision: str,
               world_size: int, autocast) -> Choice:
    """The variant the run's checkpoint (or trunk) recorded, else a new choice, kept in the
    state: a resumed run must not change its kernels halfway."""
    if state.variant:
        return Choice.from_dict(state.variant, "checkpoint")
    if state.next_epoch and device.type == "cpu":  # a checkpoint from before variants were kept
        choice = Choice(bool(cfg.channels_last), bool(cfg.compile), "checkpoint",
                        "as the run trained before lt_bench measured variants")
    else:
        choice = parts.choose_variant(cfg, state.model, data, device, precision, world_size,
                                      autocast)
    state.variant = choice.to_dict()
    return choice


def start_tracking(run: Run, state: RunState, precision: str, branched: bool) -> None:
    cfg, out_dir = run.cfg, run.out_dir
    write_file(config_file(out_dir), OmegaConf.to_yaml(cfg))
    used = {"precision_used": precision, "variant_used": state.variant["label"]}
    state.tracker_run_id = run.tracker.start(
        {**to_dict(cfg), **used, **fork.trunk_params(state)}, out_dir,
        run.data.describe(**thresholds_of(cfg.get("eval"))), state.tracker_run_id)
    if branched:  # the trunk's epochs are this run's too
        fork.replay_history(run.tracker, state.history)


def finish(run: Run, state: RunState, precision: str) -> RunResult:
    result = from_history(run.cfg, run.data, state.history, "FINISHED", state.elapsed,
                          run_id=state.tracker_run_id, run_dir=str(run.out_dir),
                          cfg_hash=config_hash(run.cfg),
                          group_of_class=groups(run.data.train_counts,
                                                **thresholds_of(run.cfg.get("eval"))),
                          precision=precision,
                          variant=state.variant)
    result.provenance = provenance.gather(run.data, state.device, run.world_size,
                                          run.cfg.protocol.batch_size, result.best_chosen_on)
    if run.rank == 0:
        result.save(results_file(run.out_dir))
        run.tracker.finish(result, status="FINISHED")
    return result


def record_failure(tracker, status: str) -> None:
    try:
        tracker.finish(None, status=status)
    except Exception as exc:  # never hide the error that stopped the run
        log.error("the tracker could not record the %s run: %s", status, exc)


def step_bar(cfg: DictConfig, steps_per_epoch: int, first_epoch: int, is_main: bool,
             epochs: int):
    """One bar over the whole run (its ETA is the run's), resumed where the run stands."""
    # disable=None: off a terminal (a log file) tqdm draws nothing, and the epoch lines that
    # bar.write prints are plain lines, not carriage-return frames
    return tqdm(total=epochs * steps_per_epoch, initial=first_epoch * steps_per_epoch,
                unit="step", disable=True if cfg.quiet or not is_main else None,
                dynamic_ncols=True,
                mininterval=1.0, desc=f"{cfg.method.name} seed {cfg.seed}")


def resume_or_start(state: RunState, cfg: DictConfig, out_dir: Path, is_main: bool, say,
                    trunk: str | None = None, fingerprint: str | None = None) -> bool:
    """Continue the run's own checkpoint, else branch from ``trunk`` when given (True); either
    only when it trained on the data of ``fingerprint`` (the run's)."""
    checkpoint = checkpoint_file(out_dir)
    branched = False
    if cfg.resume and checkpoint.is_file():
        state.restore(checkpoint)
        same_data(state.data_fingerprint, fingerprint, checkpoint)
        say(f"resuming {out_dir.name} after epoch {state.next_epoch}")
    else:
        if is_main and checkpoint.exists():
            checkpoint.unlink()
        if trunk is not None:
            fork.branch(state, Path(trunk))
            same_data(state.data_fingerprint, fingerprint, checkpoint_file(Path(trunk)))
            say(f"branching from the trunk {Path(trunk).name} after epoch {state.next_epoch}")
            branched = True
    state.data_fingerprint = fingerprint
    if is_main:
        remove_stale_temporaries(out_dir)
    return branched


def same_data(trained_on: str | None, now: str | None, checkpoint: Path) -> None:
    """Refuse to continue a checkpoint trained on other images (another copy of CIFAR, other
    files under the same folder): the run would mix two data sets. A checkpoint from before
    lt_bench kept the fingerprint is trusted, as it was."""
    if trained_on is None or now is None or trained_on == now:
        return
    raise LtBenchError(
        f"{str(checkpoint)!r} was trained on other data (fingerprint {trained_on}; this run's "
        f"data: {now}): it is never continued on these images; use another workspace, or delete "
        f"{checkpoint.parent.name} to train it again on these")


def run_epoch(run: Run, state: RunState, epoch: int) -> None:
    """Train one epoch, evaluate when due, record it, and checkpoint (rank 0)."""
    cfg, data, device, is_main = run.cfg, run.data, state.device, run.rank == 0
    p = cfg.protocol

    def on_step(step: int, mean_loss: float | None) -> None:
        if run.threads is not None and (step + 1) % EVERY_STEPS == 0 and run.threads.look():
            line = f"threads now {run.threads.describe()}"
            if cfg.quiet:  # a sweep worker's log
                print(line, flush=True)
            else:
                run.bar.write(f"lt-bench: {line}")
        run.bar.update(1)
        run.progress.step(epoch, step + 1)
        if mean_loss is not None:
            run.bar.set_postfix(epoch=epoch + 1, loss=f"{mean_loss:.3f}")

    started = time.perf_counter()
    weights_used = state.criterion.class_weights.tolist()  # the weights applied this epoch
    lr_used = state.optimizer.param_groups[0]["lr"]  # of its first step: after it, the next's
    batches = data.train_batches(epoch, p.batch_size, device=device, seed=cfg.seed,
                                 rank=run.rank, world_size=run.world_size,
                                 drop_last=run.drop_last)
    meta = (meta_batches(data, p.batch_size, device=device, seed=cfg.seed, epoch=epoch)
            if state.criterion.looks_ahead else None)
    train_loss = loop.train_one_epoch(
        run.model, state.criterion, state.optimizer, state.scheduler, batches, epoch=epoch,
        autocast=run.autocast, memory_format=run.memory_format,
        log_every=cfg.log_every, on_step=on_step, meta=meta, fence=run.fence)
    metrics = {"train/loss": train_loss, "lr": lr_used,
               "time/train_s": time.perf_counter() - started}
    if run.fence is not None and (redone := run.fence.take_count()):
        metrics["train/fp32_redone"] = redone
    record = {"epoch": epoch, "class_weights": weights_used}
    test = None
    if (epoch + 1) % p.eval_every == 0 or epoch + 1 == p.epochs:
        eval_batch = cfg.eval_batch_size or loop.default_eval_batch(data, p.batch_size)
        scores, test = loop.evaluate_epoch(state.model, data, device, eval_batch, run.rank,
                                           run.world_size, run.autocast, run.memory_format,
                                           thresholds_of(cfg.get("eval")))
        metrics.update(scores)
        record.update(per_class=test["per_class"], confusion=test.get("confusion"))
    metrics["time/epoch_s"] = time.perf_counter() - started
    state.elapsed += metrics["time/epoch_s"]
    state.history.append({**record, **metrics})
    loop.drop_old_confusions(state.history)
    state.next_epoch = epoch + 1
    if is_main:
        run.tracker.log_metrics(metrics, step=epoch)
        state.save(checkpoint_file(run.out_dir))
        line = f"epoch {epoch + 1}/{p.epochs}  loss {train_loss:.3f}" + (
            "  " + loop.format_accuracy(test) if test is not None else "")
        if not cfg.quiet and test is not None:
            run.bar.write(line)
        elif cfg.quiet:  # a sweep worker: its log gets one plain line an epoch
            print(line, flush=True)
        run.progress.epoch_done(epoch, test["acc"] if test is not None else None)

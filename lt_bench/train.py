"""One training run: config → data → backbone → method → training loop → tracker.

Read top to bottom, like torchvision's reference ``train.py``. Every method is trained the same
way: the loop only calls ``criterion(logits, targets)`` and ``criterion.end_epoch()``, so a
comparison between methods differs only in the method. Runs under ``torchrun`` use
DistributedDataParallel; the criterion all-reduces its own statistics in ``end_epoch``.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from lt_bench.api import build_method, check_method
from lt_bench.backbones import build_backbone, check_backbone
from lt_bench.checkpoint import load_checkpoint, remove_stale_temporaries, save_checkpoint
from lt_bench.config import config_hash, to_dict
from lt_bench.data import DataConfig, TensorData, groups, load_data
from lt_bench.device_defaults import resolve_compile, resolve_precision
from lt_bench.errors import LtBenchError
from lt_bench.evaluate import evaluate, summarize
from lt_bench.progress import RunProgress
from lt_bench.registry import get_registry


def setup_distributed(device_name: str) -> tuple[int, int, torch.device]:
    """Rank, world size and device; initialises torch.distributed under torchrun."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_name == "auto":
        device_name = "cuda" if torch.cuda.is_available() else "cpu"
    if device_name == "cuda":  # each torchrun process its own GPU, not all of them GPU 0
        device_name = f"cuda:{local_rank}"
    try:
        device = torch.device(device_name)
    except RuntimeError:
        raise LtBenchError(f"config key 'device' must be auto, cpu, cuda or cuda:N, "
                           f"got {device_name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LtBenchError("device=cuda was asked for but no CUDA GPU is visible; use device=cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cpu":  # share the cores instead of oversubscribing them
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return rank, world_size, device


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


def build_optimizer(model: torch.nn.Module, p, device: torch.device) -> torch.optim.Optimizer:
    params = [q for q in model.parameters() if q.requires_grad]
    # On CUDA one fused kernel updates every parameter instead of several launches a step: the
    # same update, no slower in eager (docs/BENCHMARKS.md), and fewer launches beside a CUDA graph.
    fused = device.type == "cuda"
    if p.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=p.lr, weight_decay=p.weight_decay, fused=fused)
    return torch.optim.SGD(params, lr=p.lr, momentum=p.momentum, nesterov=p.nesterov,
                           weight_decay=p.weight_decay, fused=fused)


def lr_factor(step: int, steps_per_epoch: int, p) -> float:
    """Multiplier of the base lr at a global step: linear warm-up, then step decay or cosine."""
    warmup_steps = p.warmup_epochs * steps_per_epoch
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0
    if p.schedule == "cosine":
        total = max(1, p.epochs * steps_per_epoch - warmup_steps)
        progress = min(1.0, max(0, step - warmup_steps) / total)
        return warm * 0.5 * (1.0 + math.cos(math.pi * progress))
    epoch = step // steps_per_epoch
    return warm * p.lr_decay ** sum(epoch >= m for m in p.milestones)


def method_options_of(cfg: DictConfig) -> dict:
    options = {k: v for k, v in to_dict(cfg.method).items() if k != "name"}
    if cfg.protocol.start_epoch is not None:
        options.setdefault("start_epoch", cfg.protocol.start_epoch)
    return options


def backbone_options_of(cfg: DictConfig) -> dict:
    return {k: v for k, v in to_dict(cfg.backbone).items() if k != "name"}


def check_names(cfg: DictConfig) -> None:
    """Fail on a misspelt name or option now, not after minutes of loading data."""
    registry = get_registry()
    registry.get("datasets", cfg.dataset)
    registry.get("trackers", cfg.tracking.tracker)
    check_method(cfg.method.name, method_options_of(cfg))
    try:  # option values (beta=1.5) too: a trial build on made-up counts, before any decoding
        build_method(cfg.method.name, [100, 10], **method_options_of(cfg))
    except LtBenchError:
        raise
    except Exception:
        pass  # a plugin that needs the real counts is checked when they are known
    check_backbone(cfg.backbone.name, backbone_options_of(cfg))


def run_folder(cfg: DictConfig) -> Path:
    name = f"{cfg.dataset}-{cfg.method.name}-{config_hash(cfg)}-seed{cfg.seed}"
    return Path(cfg.workspace).expanduser() / "runs" / name


def build_tracker(cfg: DictConfig):
    entry = get_registry().get("trackers", cfg.tracking.tracker)
    return entry.factory(cfg)


def train(cfg: DictConfig) -> dict:
    """Train and evaluate one run (one seed); return its results (also in results.json)."""
    rank, world_size, device = setup_distributed(cfg.device)
    is_main = rank == 0
    get_registry(cfg.plugins)
    check_names(cfg)
    seed_everything(cfg.seed, cfg.deterministic)
    out_dir = run_folder(cfg)
    results_path = out_dir / "results.json"
    checkpoint_path = out_dir / "checkpoint.pt"
    if cfg.resume and results_path.is_file():
        results = json.loads(results_path.read_text())
        if results.get("status") == "FINISHED":
            if is_main and not cfg.quiet:
                print(f"lt-bench: {out_dir} already finished; pass resume=false to train again")
            return results
    precision, why = resolve_precision(cfg.precision, device)
    if is_main and not cfg.quiet:
        print(f"lt-bench: precision: {precision} ({why})")
    # Before the data: a tracker that cannot start (MLflow not installed) or a workspace that
    # cannot be written fails in one line now, not after minutes of decoding.
    if is_main:
        check_writable(Path(cfg.workspace).expanduser())
    tracker = build_tracker(cfg) if is_main else None

    # -- data, model, method --------------------------------------------------------------------
    data = load_data(cfg.dataset, cfg.imbalance, DataConfig(**to_dict(cfg.data)))
    num_classes = len(data.classes)
    model = build_backbone(cfg.backbone.name, num_classes, class_names=list(data.classes),
                           **backbone_options_of(cfg)).to(device)
    channels_last = device.type == "cuda" if cfg.channels_last is None else cfg.channels_last
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    criterion = build_method(cfg.method.name, data.train_counts,
                             **method_options_of(cfg)).to(device)
    p = cfg.protocol
    # A last batch of one sample would break BatchNorm in training mode: drop it then.
    drop_last = data.samples_per_rank(world_size) % p.batch_size == 1
    steps_per_epoch = data.num_train_batches(p.batch_size, world_size, drop_last)
    optimizer = build_optimizer(model, p, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, steps_per_epoch, p))

    # -- resume ----------------------------------------------------------------------------------
    first_epoch, history, tracker_run_id, elapsed = 0, [], None, 0.0
    if cfg.resume and checkpoint_path.is_file():
        # Read onto the CPU: load_state_dict copies each tensor to its owner's device, and the
        # RNG states must stay CPU byte tensors whatever device the run trains on.
        state = load_checkpoint(checkpoint_path, map_location="cpu")
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            criterion.load_state_dict(state["criterion"])
            torch.set_rng_state(state["rng"])
            if device.type == "cuda" and state.get("cuda_rng") is not None:
                torch.cuda.set_rng_state(state["cuda_rng"], device)
            first_epoch, history = state["epoch"] + 1, state["history"]
        except (KeyError, TypeError, RuntimeError, ValueError) as exc:
            raise LtBenchError(
                f"checkpoint {str(checkpoint_path)!r} is not one of this run's "
                f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); delete it or "
                "pass resume=false to start the run again") from None
        tracker_run_id, elapsed = state.get("tracker_run_id"), state.get("elapsed", 0.0)
        if is_main and not cfg.quiet:
            print(f"lt-bench: resuming {out_dir.name} after epoch {first_epoch}")
    elif is_main and checkpoint_path.exists():
        checkpoint_path.unlink()
    if is_main:
        remove_stale_temporaries(out_dir)

    train_model = model
    if world_size > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(
            train_model, device_ids=[device.index] if device.type == "cuda" else None)
    compile_mode, compile_why = resolve_compile(cfg.compile, cfg.compile_mode, device,
                                                world_size, cfg.deterministic)
    if compile_mode:  # after DDP, so that DDP sees the model's own parameter and buffer names
        if is_main and not cfg.quiet:
            print(f"lt-bench: compile: {compile_mode} ({compile_why}; the first epoch compiles)")
        # dynamic=False: the last, smaller batch gets a graph of its own instead of turning the
        # whole model into a dynamic-shape graph (which CUDA graphs cannot replay).
        train_model = torch.compile(train_model, mode=compile_mode, dynamic=False)

    resolved = {**to_dict(cfg), "precision_used": precision}
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
        tracker_run_id = tracker.start(resolved, out_dir, data.describe(), tracker_run_id)
    progress = RunProgress(out_dir, p.epochs, steps_per_epoch, enabled=is_main)

    autocast = (torch.autocast(device.type, dtype=torch.bfloat16)
                if precision == "bf16" else nullcontext())
    eval_batch = cfg.eval_batch_size or default_eval_batch(data, p.batch_size)
    bar = tqdm(total=p.epochs * steps_per_epoch, initial=first_epoch * steps_per_epoch,
               disable=cfg.quiet or not is_main, unit="step", dynamic_ncols=True,
               mininterval=1.0, desc=f"{cfg.method.name} seed {cfg.seed}")
    status = "FAILED"
    try:
        for epoch in range(first_epoch, p.epochs):
            started = time.perf_counter()
            weights_used = criterion.class_weights.tolist()  # the weights applied this epoch
            train_model.train()
            criterion.train()
            loss_sum = torch.zeros((), device=device)
            for step, (images, targets) in enumerate(data.train_batches(
                    epoch, p.batch_size, device=device, seed=cfg.seed, rank=rank,
                    world_size=world_size, drop_last=drop_last)):
                images = images.contiguous(memory_format=memory_format)
                with autocast:
                    outputs = train_model(images)
                    # Multi-branch heads (VL-LTR) return a tuple: the weights apply to every
                    # branch, the statistics come from the first.
                    branches = outputs if isinstance(outputs, tuple) else (outputs,)
                    loss = sum(criterion(z, targets, observe=i == 0)
                               for i, z in enumerate(branches))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                loss_sum += loss.detach()
                bar.update(1)
                progress.step(epoch, step + 1)
                if (step + 1) % cfg.log_every == 0:  # the only host sync in the step loop
                    mean_loss = check_finite(loss_sum, epoch, step) / (step + 1)
                    bar.set_postfix(epoch=epoch + 1, loss=f"{mean_loss:.3f}")
            train_loss = check_finite(loss_sum, epoch, step) / (step + 1)
            criterion.end_epoch()
            train_time = time.perf_counter() - started
            metrics = {"train/loss": train_loss, "lr": optimizer.param_groups[0]["lr"],
                       "time/train_s": train_time}
            evaluated = (epoch + 1) % p.eval_every == 0 or epoch + 1 == p.epochs
            if evaluated:
                model.eval()
                with autocast:
                    ev = evaluate(model, data, device, eval_batch, rank, world_size)
                    val = (evaluate(model, data, device, eval_batch, rank, world_size, "val")
                           if data.num_val else {})
                for split, report in (("test", ev), ("val", val)):
                    metrics.update({f"{split}/{k}": v for k, v in report.items()
                                    if isinstance(v, (int, float))})
            metrics["time/epoch_s"] = time.perf_counter() - started
            elapsed += metrics["time/epoch_s"]
            record = {"epoch": epoch, **metrics, "class_weights": weights_used}
            if evaluated:
                record["per_class"] = ev["per_class"]
                record["confusion"] = ev.get("confusion")
            history.append(record)
            drop_old_confusions(history)
            if is_main:
                tracker.log_metrics(metrics, step=epoch)
                save_checkpoint(checkpoint_path, {
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "criterion": criterion.state_dict(),
                    "rng": torch.get_rng_state(), "epoch": epoch, "history": history,
                    "cuda_rng": (torch.cuda.get_rng_state(device)
                                 if device.type == "cuda" else None),
                    "tracker_run_id": tracker_run_id, "elapsed": elapsed,
                })
                line = f"epoch {epoch + 1}/{p.epochs}  loss {train_loss:.3f}" + (
                    "  " + format_accuracy(ev) if evaluated else "")
                if not cfg.quiet and evaluated:
                    bar.write(line)
                elif cfg.quiet:  # a sweep worker: its log gets one plain line an epoch
                    print(line, flush=True)
                progress.epoch_done(epoch, ev["acc"] if evaluated else None)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        bar.close()
        if status != "FINISHED" and is_main:
            try:
                tracker.finish({"status": status}, status=status)
            except Exception as exc:  # never hide the error that stopped the run
                print(f"lt-bench: the tracker could not record the {status} run: {exc}")
    results = summarize(cfg, data, history, status, elapsed, run_id=tracker_run_id)
    results["run_dir"] = str(out_dir)
    results["cfg_hash"] = config_hash(cfg)
    results["group_of_class"] = groups(data.train_counts)
    results["precision"] = precision
    if is_main:
        tmp = results_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=1))
        os.replace(tmp, results_path)
        tracker.finish(results, status="FINISHED")
    return results


def format_accuracy(ev: dict) -> str:
    """``acc 0.7012  many 0.81  medium 0.52  few n/a`` (n/a: the group has no class)."""
    def pct(v):
        return "n/a" if v is None else f"{v:.4f}"
    return "  ".join(f"{k} {pct(ev.get(f'acc_{k}' if k != 'acc' else k))}"
                     for k in ("acc", "many", "medium", "few"))


def check_writable(folder: Path) -> None:
    probe = folder / f".lt-bench-write-probe-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise LtBenchError(f"config key 'workspace': cannot write in {str(folder)!r} "
                           f"({exc.strerror or exc}); choose a writable folder") from None


def default_eval_batch(data, batch_size: int) -> int:
    """Small images on the device are scored 1,000 at a time: fewer, fuller launches on a GPU."""
    return max(batch_size, 1000) if isinstance(data, TensorData) else batch_size


def drop_old_confusions(history: list[dict]) -> None:
    """Keep the confusion matrix of the newest and of the best evaluated epochs only, so a
    checkpoint's size does not grow with the epoch count (C² numbers an epoch)."""
    scored = [h for h in history if h.get("confusion") is not None]
    if len(scored) < 2:
        return
    key = "val/acc" if all("val/acc" in h for h in scored) else "test/acc"
    best = max(scored, key=lambda h: h[key])
    for h in scored[:-1]:
        if h is not best:
            h.pop("confusion")


#: a mean training loss above this has diverged (cross-entropy of a uniform guess over 10^4
#: classes is 9.2; LDAM's scale 30 multiplies by at most 30)
DIVERGED = 1e6


def check_finite(loss_sum: torch.Tensor, epoch: int, step: int) -> float:
    value = loss_sum.item()
    if not math.isfinite(value) or value / (step + 1) > DIVERGED:
        raise LtBenchError(
            f"training diverged in epoch {epoch + 1} by step {step + 1}: the mean loss is "
            f"{value / (step + 1):.3g}; lower protocol.lr, use precision=fp32, or check the data"
        )
    return value


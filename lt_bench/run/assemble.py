"""A run's parts from its config: device and ranks, seeds, model, criterion, optimizer and
schedule, tracker. Every part is made through the registry (``Registry.build``)."""

from __future__ import annotations

import inspect
import math
import os
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from omegaconf import DictConfig

from lt_bench.api import MethodSpec, check_method, construct_method
from lt_bench.backbones import build_backbone, check_backbone
from lt_bench.backbones.heads import swap_head
from lt_bench.config import to_dict
from lt_bench.data import DataConfig, cache_dir
from lt_bench.device.cpu_variant import CACHE_NAME, Choice, Workload, choose
from lt_bench.device.defaults import resolve_compile
from lt_bench.errors import LtBenchError
from lt_bench.method import Method
from lt_bench.registry import get_registry
from lt_bench.run.loop import default_eval_batch


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


def method_options_of(cfg: DictConfig) -> dict:
    """The method's options; the re-weighting start comes from ``protocol.start_epoch`` (the one
    key for it in a config: ``config`` refuses ``method.start_epoch``)."""
    options = {k: v for k, v in to_dict(cfg.method).items() if k != "name"}
    if cfg.protocol.start_epoch is not None:
        options["start_epoch"] = cfg.protocol.start_epoch
    return options


def backbone_options_of(cfg: DictConfig) -> dict:
    return {k: v for k, v in to_dict(cfg.backbone).items() if k != "name"}


@dataclass(frozen=True)
class RunMethod:
    """A run's method, looked up in the registry and its options checked once.

    The run hands it down: ``cls`` says what the method needs of the model and the data, and
    ``build`` makes the criterion once the class counts are known.
    """

    spec: MethodSpec
    options: dict
    cls: type  # its Method class; Method itself for a plain factory, which declares nothing

    def build(self, class_counts) -> Method:
        return construct_method(self.spec, class_counts, self.options)


def resolve_method(cfg: DictConfig) -> RunMethod:
    options = method_options_of(cfg)
    spec = check_method(cfg.method.name, options)
    factory = spec.entry.factory
    cls = factory if isinstance(factory, type) and issubclass(factory, Method) else Method
    return RunMethod(spec, options, cls)


def check_names(cfg: DictConfig) -> RunMethod:
    """Fail on a misspelt name or option now, not after minutes of loading data; return the
    run's method, resolved."""
    registry = get_registry()
    registry.get("datasets", cfg.dataset)
    registry.get("trackers", cfg.tracking.tracker)
    method = resolve_method(cfg)
    try:  # option values (beta=1.5) too, before any decoding
        method.build(TRIAL_COUNTS)
    except LtBenchError:
        raise
    except Exception:
        pass  # a plugin that needs the real counts is checked when they are known
    check_backbone(cfg.backbone.name, backbone_options_of(cfg))
    return method


TRIAL_COUNTS = [100, 10]  # made-up class counts: a method built before any data is loaded


def trial_method(cfg: DictConfig) -> Method:
    """``cfg``'s method built on made-up counts: its options checked, its properties readable
    (``plain_epochs``) before any data is loaded."""
    return resolve_method(cfg).build(TRIAL_COUNTS)


def check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # a fresh name (O_EXCL): a predictable one could be a planted link, written through
        fd, probe = tempfile.mkstemp(prefix=".lt-bench-write-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise LtBenchError(f"config key 'workspace': cannot write in {str(folder)!r} "
                           f"({exc.strerror or exc}); choose a writable folder") from None


def build_tracker(cfg: DictConfig):
    return get_registry().build("trackers", cfg.tracking.tracker, cfg)


def build_model(cfg: DictConfig, method: RunMethod, data,
                device: torch.device) -> torch.nn.Module:
    """The backbone, with what the method declared it needs: a swapped head, features."""
    model = build_backbone(cfg.backbone.name, len(data.classes), class_names=list(data.classes),
                           **backbone_options_of(cfg))
    method = method.cls
    if method.head is not None:
        swap_head(model, method.head, cfg.backbone.name)
    if method.needs_features and not returns_features(model):
        raise LtBenchError(f"method {cfg.method.name!r} needs the penultimate features, but "
                           f"backbone {cfg.backbone.name!r} does not return them (its forward "
                           "takes no return_features); use backbone=resnet32")
    return model.to(device)  # in its memory format once the variant is chosen (choose_variant)


def check_needs(cfg: DictConfig, method: RunMethod, data, world_size: int) -> None:
    """A method that declares a meta set gets one, or the run stops before it trains; a
    look-ahead runs in one process (each rank would train its own weight net)."""
    method = method.cls
    if world_size > 1 and method.wants_look_ahead is not Method.wants_look_ahead:
        raise LtBenchError(f"method {cfg.method.name!r} looks ahead on a meta set, which runs "
                           "in one process: start it without torchrun")
    if method.meta_per_class and getattr(data, "meta", None) is None:
        raise LtBenchError(
            f"method {cfg.method.name!r} needs a balanced meta set, but data set "
            f"{cfg.dataset!r} made none for data.meta_per_class={cfg.data.meta_per_class}: "
            "its factory must hold out that many images per class as data.meta")


def returns_features(model: torch.nn.Module) -> bool:
    try:
        return "return_features" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def build_criterion(method: RunMethod, data, device: torch.device) -> torch.nn.Module:
    return method.build(data.train_counts).to(device)


def choose_variant(cfg: DictConfig, model: torch.nn.Module, data, device: torch.device,
                   precision: str, world_size: int, autocast) -> Choice:
    """Memory format and compilation: measured on a CPU (``lt_bench.device.cpu_variant``); on CUDA
    channels_last, and torch.compile where ``resolve_compile`` says it pays."""
    if device.type != "cpu":
        mode, why = resolve_compile(cfg.compile, cfg.compile_mode, device, world_size,
                                    cfg.deterministic)
        channels_last = True if cfg.channels_last is None else bool(cfg.channels_last)
        return Choice(channels_last, mode is not None, "default", why)
    p = cfg.protocol
    eval_batch = cfg.eval_batch_size or default_eval_batch(data, p.batch_size)
    workload = Workload(
        sample_shape=sample_shape(data, cfg), num_classes=len(data.classes), precision=precision,
        batch=p.batch_size, eval_batch=min(eval_batch, max(data.num_test, 1)),
        train_images=data.num_train, eval_images=data.num_test / max(1, p.eval_every),
        epochs=p.epochs)
    try:
        cache = cache_dir(DataConfig(**to_dict(cfg.data))) / CACHE_NAME
    except LtBenchError:
        cache = None  # without a cache every run probes; it still trains
    return choose(cfg, model, workload, autocast, world_size=world_size, cache=cache)


def sample_shape(data, cfg: DictConfig) -> tuple[int, ...]:
    """One training image's shape as the model sees it (C, H, W)."""
    images = getattr(data, "train_images", None)
    if images is not None:
        return tuple(images.shape[1:])
    size = getattr(data, "image_size", None) or cfg.data.image_size
    return (3, size, size)


def build_optimizer(model: torch.nn.Module, p, device: torch.device) -> torch.optim.Optimizer:
    params = [q for q in model.parameters() if q.requires_grad]
    # On CUDA one fused kernel updates every parameter instead of several launches a step: the
    # same update, no slower in eager (docs/BENCHMARKS.md), and fewer launches beside a CUDA graph.
    fused = device.type == "cuda"
    if p.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=p.lr, weight_decay=p.weight_decay, fused=fused)
    return torch.optim.SGD(params, lr=p.lr, momentum=p.momentum, nesterov=p.nesterov,
                           weight_decay=p.weight_decay, fused=fused)


def build_schedule(optimizer, steps_per_epoch: int, p):
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, steps_per_epoch, p))


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


def wrap_for_training(model: torch.nn.Module, cfg: DictConfig, device: torch.device,
                      world_size: int, say, choice: Choice) -> torch.nn.Module:
    """DistributedDataParallel under torchrun, then ``torch.compile`` where the variant says."""
    if world_size > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if choice.compile:  # after DDP, so that DDP sees the model's own parameter and buffer names
        mode = cfg.compile_mode or ("reduce-overhead" if device.type == "cuda" else "default")
        say(f"compile: {mode} (the first epoch compiles)")
        # dynamic=False: the last, smaller batch gets a graph of its own instead of turning the
        # whole model into a dynamic-shape graph (which CUDA graphs cannot replay).
        model = torch.compile(model, mode=mode, dynamic=False)
    return model

"""The ``data:`` section of a run config (an OmegaConf structured schema: simple types only)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from lt_bench.data.copies import check_copy
from lt_bench.errors import LtBenchError, closest

PROFILES = ("exp", "step")
SAMPLERS = ("none", "sqrt", "balanced")
AUGMENTS = ("standard", "randaugment", "none")
PIPELINES = ("auto", "tensor", "loader")
DOWNLOADS = ("auto", "true", "false")
PAD_MODES = ("zero", "reflect")
NORMALIZES = ("dataset", "cifar_fixed")


@dataclass
class DataConfig:
    """Where the data lives and how it is fed to the model."""

    root: str = "./data"
    profile: str = "exp"  # exp | step
    subset_seed: int = 0
    sampler: str = "none"  # none | sqrt | balanced
    augment: str = "standard"  # standard | randaugment | none
    image_size: int = 224  # large data only
    workers: int = 2  # DataLoader workers, large data only
    cache_dir: str | None = None  # default $LT_BENCH_CACHE or ~/.cache/lt_bench
    # CIFAR-10/100 missing under root: auto fetches it with torchvision's download and, offline,
    # says which archive to put where; true fetches (or fails); false only says where
    download: str = "auto"  # auto | true | false
    # which copy of CIFAR to read when data.root holds several (lt_bench.data.copies): auto
    # takes the lossless one first and is resolved when the config loads, so that the copy is
    # part of the run's identity; pickle | webp | jpeg name one
    copy: str = "auto"
    train_list: str | None = None  # file list / json, relative to root; default per data set
    test_list: str | None = None
    # -- additions -------------------------------------------------------------------------
    pipeline: str = "auto"  # auto | tensor (decoded uint8 on the device) | loader (DataLoader)
    num_classes: int | None = None  # file lists: the class range; default per data set
    progress: bool = True  # tqdm bars while decoding / caching
    # a balanced validation set held out of the training images (0: none); when set, the best
    # epoch is chosen on it instead of on the test set
    val_per_class: int = 0
    # a balanced meta set held out of the training images (0: none) for methods that learn
    # their weights on one (da, meta_weight_net); such a method sets it when it is left at 0
    meta_per_class: int = 0
    # small images kept as tensors (CIFAR-LT) only, where the random crop pads 1/8 of a side:
    # zero is torchvision's RandomCrop default; reflect mirrors the border without repeating
    # the edge pixel, as the class-volume authors' code (after Jamal et al.'s Longtail_DA) did
    pad_mode: str = "zero"  # zero | reflect
    # dataset: per-channel mean/std of the data set's whole training split (for CIFAR-LT the
    # balanced 50,000 images, not the long-tailed subset); cifar_fixed: the constants of that
    # code, mean (125.3, 123.0, 113.9)/255 and std (63.0, 62.1, 66.7)/255
    normalize: str = "dataset"  # dataset | cifar_fixed


def as_data_config(cfg) -> DataConfig:
    """A ``DataConfig`` from a DataConfig, an OmegaConf node, a dict or None, validated."""
    if cfg is None:
        cfg = DataConfig()
    elif not isinstance(cfg, DataConfig):
        try:
            from omegaconf import DictConfig, OmegaConf

            if isinstance(cfg, DictConfig):
                cfg = OmegaConf.to_container(cfg, resolve=True)
        except ImportError:  # pragma: no cover - omegaconf is a dependency
            pass
        if not isinstance(cfg, dict):
            raise LtBenchError(f"data config must be a mapping, got {type(cfg).__name__}")
        fields = {f.name for f in dataclasses.fields(DataConfig)}
        for key in cfg:
            if key not in fields:
                raise LtBenchError(
                    f"unknown data option {key!r}{closest(key, fields)}; "
                    f"valid: {', '.join(sorted(fields))}"
                )
        cfg = DataConfig(**cfg)
    for key, allowed in (("profile", PROFILES), ("sampler", SAMPLERS), ("augment", AUGMENTS),
                         ("pipeline", PIPELINES), ("pad_mode", PAD_MODES),
                         ("normalize", NORMALIZES)):
        value = getattr(cfg, key)
        if value not in allowed:
            raise LtBenchError(
                f"data.{key}={value!r} is not valid{closest(value, allowed)}; "
                f"choose one of: {', '.join(allowed)}"
            )
    check_copy(cfg.copy)
    download = str(cfg.download).lower()  # YAML gives true/false as booleans
    if download not in DOWNLOADS:
        raise LtBenchError(f"data.download={cfg.download!r} is not valid; choose one of: "
                           f"{', '.join(DOWNLOADS)}")
    cfg = dataclasses.replace(cfg, download=download)
    if cfg.image_size < 1:
        raise LtBenchError(f"data.image_size must be a positive integer, got {cfg.image_size}")
    if cfg.workers < 0:
        raise LtBenchError(f"data.workers must be ≥ 0, got {cfg.workers}")
    if cfg.meta_per_class < 0:
        raise LtBenchError(f"data.meta_per_class must be ≥ 0 (0: no meta set), "
                           f"got {cfg.meta_per_class}")
    if cfg.val_per_class < 0:
        raise LtBenchError(f"data.val_per_class must be ≥ 0 (0: no validation set), "
                           f"got {cfg.val_per_class}")
    return cfg


def cache_dir(cfg: DataConfig) -> Path:
    """``data.cache_dir``, else ``$LT_BENCH_CACHE``, else ``~/.cache/lt_bench`` (created)."""
    path = cfg.cache_dir or os.environ.get("LT_BENCH_CACHE") or "~/.cache/lt_bench"
    path = Path(path).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LtBenchError(
            f"cannot create the data cache folder {path}: {exc.strerror}; set data.cache_dir "
            "or LT_BENCH_CACHE to a writable folder"
        ) from exc
    return path

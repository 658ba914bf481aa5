"""Checks of a run config: values in range, the protocol's schedule, what a config may interpolate.

What is wrong is refused in one line naming the key (``check_config``, ``check_interpolations``).
What is legal but trains something other than the protocol's shape, say a milestone past the
last epoch of a protocol shortened with ``protocol.epochs=1``, comes back as warnings from
``schedule_warnings``, for the command to print once.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from omegaconf import DictConfig, OmegaConf

from lt_bench.errors import LtBenchError
from lt_bench.registry import get_registry

PRECISIONS = ("auto", "fp32", "bf16")  # resolved per device by lt_bench.device.defaults
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
#: ``${a.b}``: a reference to another key of the config, the one interpolation a config may
#: hold; ``\${`` is a literal, not an interpolation
REFERENCE = re.compile(r"(?<!\\)\$\{\s*[A-Za-z_][\w\-]*(?:\.[A-Za-z_][\w\-]*)*\s*\}")
INTERPOLATION = re.compile(r"(?<!\\)\$\{")


def _strings(value, key: str) -> Iterator[tuple[str, str]]:
    """(dotted key, string) of every string in a mapping parsed from YAML."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, f"{key}.{k}" if key else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, f"{key}[{i}]")
    elif isinstance(value, str):
        yield key, value


def check_interpolations(mapping, source: str, prefix: str = "") -> None:
    """Refuse a resolver in a config (``${oc.env:HOME}``, ``${oc.decode:…}``, any ``${name:…}``):
    it reads the environment or runs code, so the same config would describe another run on
    another machine. Interpolating another key of the config (``${protocol.epochs}``) is kept."""
    for key, text in _strings(mapping, prefix):
        # What is left once the plain references are taken out must hold no interpolation:
        # a resolver (${oc.env:HOME}) and a built name (${oc.${data.root}:HOME}, ${${a}}) both
        # leave one, however they are spelt.
        if INTERPOLATION.search(REFERENCE.sub("", text)):
            raise LtBenchError(
                f"config key {key!r} in {source}: {text!r} calls a resolver or builds a key's name; "
                "a config may refer to its own keys (${protocol.epochs}) but not read the "
                "environment or run code (${oc.env:…}, ${oc.decode:…}): write the value itself")


def check_config(cfg: DictConfig) -> None:
    """Refuse, in one line naming the key, a value no run can use."""
    for group in ("backbone", "method"):
        if not cfg[group].get("name"):
            raise LtBenchError(f"config key '{group}.name' is missing: set e.g. {group}=NAME")
    if cfg.precision not in PRECISIONS:
        raise LtBenchError(f"config key 'precision' must be one of {', '.join(PRECISIONS)}, "
                           f"got {cfg.precision!r}")
    if cfg.imbalance is not None and cfg.imbalance < 1:
        raise LtBenchError(f"config key 'imbalance' must be >= 1 (n_max/n_min), got {cfg.imbalance}")
    if cfg.compile_mode is not None and cfg.compile_mode not in COMPILE_MODES:
        raise LtBenchError(f"config key 'compile_mode' must be one of {', '.join(COMPILE_MODES)}, "
                           f"got {cfg.compile_mode!r}")
    for key in ("log_every", "eval_batch_size", "protocol.eval_every"):
        value = OmegaConf.select(cfg, key)
        if value is not None and value < 1:
            raise LtBenchError(f"config key {key!r} must be >= 1, got {value}")
    if "start_epoch" in cfg.method:
        raise LtBenchError("config key 'method.start_epoch': the re-weighting start is one key "
                           "for every method, protocol.start_epoch; set that instead")
    if cfg.data.num_classes is not None and cfg.data.num_classes < 2:
        raise LtBenchError("config key 'data.num_classes' must be >= 2 (or unset for the data "
                           f"set's own), got {cfg.data.num_classes}")
    check_protocol(cfg.protocol)
    check_eval(cfg.get("eval"))


def check_eval(section) -> None:
    """The group thresholds: many-shot is more than ``eval.many_above`` images, few-shot fewer
    than ``eval.few_below``; with ``few_below`` above ``many_above`` a class between the two
    would be both, so that is refused (equal is allowed: medium is then that one count)."""
    if section is None:
        return
    many, few = section.many_above, section.few_below
    for key, value in (("many_above", many), ("few_below", few)):
        if value < 0:
            raise LtBenchError(f"config key 'eval.{key}' must be >= 0 training images, got {value}")
    if few > many:
        raise LtBenchError(f"config key 'eval.few_below' ({few}) must be <= eval.many_above "
                           f"({many}): few-shot is fewer than few_below images, many-shot more "
                           f"than many_above; e.g. eval.many_above=100 eval.few_below=20")


def check_protocol(p) -> None:
    """The protocol's optimiser and schedule: the one place they are validated."""
    for key, ok, want in (("lr", p.lr > 0, "> 0"), ("weight_decay", p.weight_decay >= 0, ">= 0"),
                          ("lr_decay", 0 < p.lr_decay <= 1, "in (0, 1]"),
                          ("momentum", 0 <= p.momentum < 1, "in [0, 1)"),
                          ("warmup_epochs", p.warmup_epochs >= 0, ">= 0"),
                          ("epochs", p.epochs >= 1, ">= 1")):
        if not ok:
            raise LtBenchError(f"config key 'protocol.{key}' must be {want}, got {p[key]}")
    if p.batch_size < 2:
        # One image a batch: BatchNorm normalises it by its own statistics and its running
        # estimates follow single images; and a step per image trains ~16x slower per image.
        raise LtBenchError(f"config key 'protocol.batch_size' must be >= 2, got {p.batch_size}: "
                           "BatchNorm cannot learn batch statistics from one image")
    if p.start_epoch is not None and p.start_epoch < 0:
        raise LtBenchError(f"config key 'protocol.start_epoch' must be >= 0, got {p.start_epoch}")
    milestones = [int(m) for m in p.milestones]
    if any(m < 0 for m in milestones):
        raise LtBenchError(f"config key 'protocol.milestones' must be epochs >= 0 (counted from "
                           f"0), got {milestones}")
    if milestones != sorted(set(milestones)):
        raise LtBenchError(f"config key 'protocol.milestones' must be increasing, without "
                           f"repeats, got {milestones}: write {sorted(set(milestones))}")
    if p.optimizer not in ("sgd", "adamw"):
        raise LtBenchError(f"config key 'protocol.optimizer' must be sgd or adamw, got {p.optimizer!r}")
    if p.schedule not in ("step", "cosine"):
        raise LtBenchError(f"config key 'protocol.schedule' must be step or cosine, got {p.schedule!r}")


def schedule_warnings(cfg: DictConfig) -> list[str]:
    """What of the protocol never happens in this run, one line each: legal (a protocol shortened
    with ``protocol.epochs=1`` keeps its milestones), so said rather than refused."""
    p = cfg.protocol
    warnings = []
    late = [int(m) for m in p.milestones if m >= p.epochs]
    if p.schedule == "step" and late:
        warnings.append(f"protocol.milestones {late} are at or past the last epoch "
                        f"(protocol.epochs={p.epochs}, counted from 0): the learning rate never "
                        "decays there")
    start = reweighting_start(cfg)
    if start is not None and start >= p.epochs and reweights(cfg.method.name, cfg.plugins):
        warnings.append(f"protocol.start_epoch={start} >= protocol.epochs={p.epochs}: no epoch "
                        f"is re-weighted, {cfg.method.name} trains with uniform class weights "
                        "throughout")
    return warnings


def reweighting_start(cfg: DictConfig) -> int | None:
    """``protocol.start_epoch``, else the method's own default; None for an unknown method."""
    if cfg.protocol.start_epoch is not None:
        return int(cfg.protocol.start_epoch)
    from lt_bench.api import method_options  # here, not at the top: it imports torch

    try:
        start = method_options(cfg.method.name, cfg.method.get("loss")).get("start_epoch")
    except LtBenchError:
        return None
    return start if isinstance(start, int) else None


def reweights(name: str, plugins=()) -> bool:
    """Whether method ``name`` may depart from uniform class weights after its start (a class
    that overrides none of what moves them does not; a plain factory may)."""
    from lt_bench.method import Method  # here, not at the top: it imports torch

    try:
        factory = get_registry(plugins or ()).get("methods", name).factory
    except LtBenchError:
        return False  # a misspelt method is named by the run's checks
    if not (isinstance(factory, type) and issubclass(factory, Method)):
        return True
    return any(getattr(factory, attr) is not getattr(Method, attr)
               for attr in ("raw_weights", "wants_statistics", "wants_look_ahead", "loss"))

"""Run configuration: a structured OmegaConf schema, YAML files, groups and ``key=value`` overrides.

A run is described by one config. It starts from the schema's defaults, then each argument is
applied in order: a YAML file is merged; ``key=value`` sets one key, and keeps winning over the
files of groups selected after it. Four keys are *groups*: ``dataset=NAME``, ``backbone=NAME``,
``method=NAME`` and ``protocol=NAME`` select a name and merge ``configs/<group>/NAME.yaml`` when
it exists (it may set keys anywhere, e.g. a protocol sets ``data.augment``). Selecting another
backbone drops the previous one's options; a method's follow ``lt_bench.config.method_args``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from lt_bench.config.checks import check_config, check_interpolations
from lt_bench.config.identity import HASHED_WHEN_SET, NOT_HASHED, config_hash  # noqa: F401  (their old home)
from lt_bench.config.method_args import MethodArgs
from lt_bench.config.safe_yaml import load_yaml, read_yaml_file
from lt_bench.data import DataConfig
from lt_bench.data.copies import CIFAR_DATASETS, resolve_copy
from lt_bench.data.groups import FEW, MANY
from lt_bench.errors import LtBenchError, closest
from lt_bench.registry import get_registry

GROUPS = ("dataset", "backbone", "method", "protocol")
log = logging.getLogger(__name__)


@dataclass
class ProtocolConfig:
    name: str = "quick"
    epochs: int = 7
    batch_size: int = 128
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "step"  # step (× lr_decay at each milestone) | cosine
    milestones: list[int] = field(default_factory=lambda: [5, 6])
    lr_decay: float = 0.01
    warmup_epochs: int = 0  # linear warm-up, per step
    # the re-weighting start, for every method (method.start_epoch is refused in a config);
    # None: the method's own default (0)
    start_epoch: int | None = None
    eval_every: int = 1


@dataclass
class TrackingConfig:
    tracker: str = "mlflow"  # mlflow (a SQLite store in the workspace by default) | local
    uri: str | None = None
    experiment: str | None = None
    # how long a call may wait on a tracking server that does not answer before the run fails
    timeout_s: float = 30.0


@dataclass
class EvalConfig:
    """What evaluation reports, not what is trained. Many-shot: more than ``many_above``
    training images; few-shot: fewer than ``few_below``; medium: the rest (both included). The
    defaults are the literature's (Liu et al. 2019: many > 100, medium 20-100, few < 20)."""

    many_above: int = MANY
    few_below: int = FEW


@dataclass
class Config:
    dataset: str = "cifar10_lt"
    imbalance: float | None = 100.0
    data: DataConfig = field(default_factory=DataConfig)
    backbone: dict[str, Any] = field(default_factory=lambda: {"name": "resnet32"})
    method: dict[str, Any] = field(default_factory=lambda: {"name": "ce"})
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    precision: str = "auto"  # auto (bf16 where the device runs it natively, else fp32) | fp32 | bf16
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    workspace: str = "./workspace"
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    plugins: list[str] = field(default_factory=list)
    resume: bool = True  # continue an interrupted run of the same config from its checkpoint
    deterministic: bool = False
    compile: bool | None = None  # None: on for a one-process CUDA run; on a CPU measured
    compile_mode: str | None = None  # None: reduce-overhead (CUDA graphs) on CUDA, else default
    eval_batch_size: int | None = None  # None: at least 1,000 for small images, else the batch
    channels_last: bool | None = None  # None: on CUDA; on a CPU the faster, measured
    quiet: bool = False
    log_every: int = 50


def config_dir() -> Path:
    """The folder of group YAML files (the repository's ``configs/``, installed as a package)."""
    return Path(str(resources.files("lt_bench_configs")))


def group_choices(group: str) -> list[str]:
    folder = config_dir() / group
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def protocol_label(cfg: DictConfig) -> str:
    """The protocol's name with the values this config moved away from its shipped file, as a
    title should say it: ``quick (epochs 2)``, not ``quick`` for a two-epoch run."""
    name = str(cfg.protocol.name)
    path = config_dir() / "protocol" / f"{name}.yaml"
    if not GROUP_NAME.fullmatch(name) or not path.is_file():
        return name
    shipped = flatten(_read_yaml(path).get("protocol") or {})
    ours = flatten(to_dict(cfg.protocol))
    moved = [f"{key} {ours[key]}" for key, value in shipped.items()
             if key != "name" and key in ours and ours[key] != value]
    return f"{name} ({', '.join(moved)})" if moved else name


def _schema() -> DictConfig:
    return OmegaConf.structured(Config)


def _explain(exc: OmegaConfBaseException, cfg: DictConfig, source: str) -> LtBenchError:
    key = getattr(exc, "full_key", None) or ""
    if isinstance(exc, ConfigKeyError) or "not in struct" in str(exc) or "Key '" in str(exc):
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        valid = list(node.keys()) if isinstance(node, DictConfig) else []
        return LtBenchError(
            f"unknown config key {key!r} in {source}{closest(leaf, valid)}; "
            f"valid keys{' under ' + parent if parent else ''}: {', '.join(map(str, valid))}"
        )
    message = (getattr(exc, "msg", None) or str(exc) or type(exc).__name__).splitlines()[0]
    if key:
        return LtBenchError(f"config key {key!r} in {source}: {message}")
    return LtBenchError(f"config {source}: {message}")


def _merge(cfg: DictConfig, update: dict, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(cfg, update)
    except OmegaConfBaseException as exc:
        raise _explain(exc, cfg, source) from exc


#: a group's name: one component of a file name under configs/<group>/ (or a plugin's name);
#: never a path, so a study or a config can reach no file but the shipped ones
GROUP_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+\-]*")


def _select_group(cfg: DictConfig, group: str, name: str, source: str) -> DictConfig:
    if not isinstance(name, str) or not name:
        raise LtBenchError(f"{source}: {group} must be a name, got {name!r}")
    if not GROUP_NAME.fullmatch(name) or ".." in name:
        choices = group_choices(group)
        raise LtBenchError(f"{source}: {group}={name!r} is not a name: a group names a shipped "
                           f"file of configs/{group}/ or a plugin's {group}, never a path"
                           f"{' (shipped: ' + ', '.join(choices) + ')' if choices else ''}; "
                           f"give your own {group} as {group}.* keys in a YAML file you pass")
    if group == "dataset":
        cfg.dataset = name
    elif group in ("backbone", "method"):
        cfg[group] = {"name": name}
    path = config_dir() / group / f"{name}.yaml"
    if path.is_file():
        mapping = _read_yaml(path)
        if "plugins" in mapping:  # only the user loads code: the command line, the
            raise LtBenchError(  # environment, or their own config file
                f"{path}: a {group} file may not load plugins (plugins: is honoured only from "
                "-p, LT_BENCH_PLUGINS or a config file you pass); remove the key")
        cfg = _apply_mapping(cfg, mapping, str(path))
    elif group == "protocol":
        choices = group_choices("protocol")
        raise LtBenchError(
            f"unknown protocol {name!r}{closest(name, choices)} in {source}; "
            f"available: {', '.join(choices)} (or give protocol.* keys in a YAML file)"
        )
    return cfg


def _apply_mapping(cfg: DictConfig, mapping: dict, source: str) -> DictConfig:
    """Merge a YAML mapping, treating a plain name under a group key as a group selection."""
    mapping = dict(mapping)
    for group in GROUPS:
        if isinstance(mapping.get(group), str):
            cfg = _select_group(cfg, group, mapping.pop(group), source)
    return _merge(cfg, mapping, source)


def _read_yaml(path: Path) -> dict:
    data = read_yaml_file(Path(path)) or {}
    if not isinstance(data, dict):
        raise LtBenchError(f"config file {str(path)!r} must hold a mapping of keys to values")
    check_interpolations(data, str(path))
    return data


def parse_override(item: str) -> tuple[str, Any]:
    """``a.b=value`` with the value parsed as YAML (numbers, lists, null)."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise LtBenchError(
            f"argument {item!r} is neither a YAML file nor key=value (e.g. protocol.epochs=10)"
        )
    if re.search(r"\s#", raw):  # YAML would drop it as a comment, silently
        raise LtBenchError(f"argument {item!r}: the value holds ' #', which YAML reads as the "
                           f"start of a comment; quote it: {key}='\"{raw}\"'")
    try:
        value = load_yaml(raw, f"the value of {key}") if raw.strip() else ""
    except LtBenchError as exc:
        if "valid YAML" not in str(exc):
            raise
        value = raw
    return key, value


def _nested(key: str, value: Any) -> dict:
    """``a.b`` and ``v`` as ``{"a": {"b": v}}``."""
    update: dict = {}
    node = update
    *parents, leaf = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return update


def load_config(paths: list[str] = (), overrides: list[str] = (),
                notes: list[str] | None = None, resolve_method: bool = True) -> DictConfig:
    """The resolved run config from YAML files then ``key=value`` overrides, validated.

    Precedence, as in Hydra: groups compose first, and what was typed (a YAML file's keys, a
    ``key=value``) wins over a group's file whatever the order: ``precision=fp32 protocol=quick``
    and a file saying ``precision: fp32`` both train in fp32. Selecting another backbone drops
    the options typed for the previous one; a method's options follow ``_method_section``, which
    says in one line each option it drops: appended to ``notes``, else logged as a warning.
    """
    cfg = _schema()
    typed: list[tuple[str, dict]] = []  # (source, mapping) of every typed key but the method's
    method = MethodArgs()
    for position, path in enumerate(paths):
        mapping = _read_yaml(Path(path))
        if isinstance(mapping.get("method"), (str, dict)):
            selected, name = method.take(mapping.pop("method"), position, str(path))
            if selected:
                cfg = _select_group(cfg, "method", name, str(path))
        cfg = _apply_mapping(cfg, mapping, str(path))
        typed.append((str(path), {k: v for k, v in mapping.items()
                                  if not (k in GROUPS and isinstance(v, str))}))
    for position, item in enumerate(overrides, start=len(paths)):
        key, value = parse_override(item)
        source = f"override {item!r}"
        check_interpolations(_nested(key, value), source)
        selected = False
        if key.startswith("method.") or (key == "method" and isinstance(value, (str, dict))):
            update = value if key == "method" else _nested(key[len("method."):], value)
            selected, name = method.take(update, position, source)
            if selected:
                cfg = _select_group(cfg, "method", name, source)
        elif key in GROUPS and isinstance(value, str):
            cfg, selected = _select_group(cfg, key, value, source), True
        else:
            typed.append((source, _nested(key, value)))
            cfg = _merge(cfg, typed[-1][1], source)
        if selected:
            for typed_source, mapping in typed:  # what was typed wins over the group's file
                if key == "backbone":
                    mapping = {k: v for k, v in mapping.items() if k != key}
                cfg = _merge(cfg, mapping, typed_source)
    cfg = _method_section(cfg, method, notes)
    try:  # every reference resolves now, or one line names the key
        OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as exc:
        raise _explain(exc, cfg, "the config") from None
    check_config(cfg)
    _resolve_data_copy(cfg)
    factory = _method_factory(cfg) if resolve_method else None
    if factory is not None:
        _drop_typed_defaults(cfg)
        _data_the_method_needs(cfg, factory)
    return cfg


def _resolve_data_copy(cfg: DictConfig) -> None:
    """``data.copy=auto`` becomes the copy found under ``data.root`` (``lt_bench.data.copies``):
    in the config, so that the run's hash, folder, trunk and record all name the pixels."""
    variant = CIFAR_DATASETS.get(cfg.dataset)
    if variant is None:
        if cfg.data["copy"] != "auto":
            raise LtBenchError(f"data.copy={cfg.data['copy']} applies to the CIFAR data sets "
                               f"({', '.join(CIFAR_DATASETS)}), not to {cfg.dataset}: remove it")
        return
    # item access: a DictConfig attribute named copy is its copy() method
    cfg.data["copy"] = resolve_copy(Path(cfg.data.root), variant, cfg.data["copy"])


def _method_section(cfg: DictConfig, method: MethodArgs, notes: list[str] | None
                    ) -> DictConfig:
    """``cfg`` with the typed options of its method (``lt_bench.config.method_args``) over those of
    the method's group file; each option dropped said once, in ``notes`` or as a warning."""
    updates, said = method.options(cfg.method.name, cfg.method.get("loss"), cfg.get("plugins"))
    for options, source in updates:
        cfg = _merge(cfg, {"method": options}, source)
    for line in said:
        if notes is None:
            log.warning("%s", line)
        else:
            notes.append(line)
    return cfg


def _method_factory(cfg: DictConfig):
    """The method's factory, with the config's own plugins loaded; None for a misspelt method,
    which the run's checks name with the closest one."""
    registry = get_registry(cfg.get("plugins") or ())  # a plugin that fails to load says so
    try:
        return registry.get("methods", cfg.method.name).factory
    except LtBenchError:
        return None


def _drop_typed_defaults(cfg: DictConfig) -> None:
    """Forget a method option (its loss's included) typed at its default, so that
    ``method.convention=paper`` and leaving it out are one setting: one hash, one leaderboard
    row, one run a sweep skips."""
    from lt_bench.api import method_options  # here, not at the top: it imports torch

    try:
        defaults = method_options(cfg.method.name, cfg.method.get("loss"))
    except LtBenchError:
        return  # a misspelt loss is named, with the closest one, by the run's checks
    for key in [k for k in cfg.method if k != "name"]:
        value = cfg.method[key]
        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value, resolve=True)
        default = defaults.get(key)
        same_kind = isinstance(value, bool) == isinstance(default, bool)  # True == 1 in Python
        if default is not None and same_kind and value == default:
            del cfg.method[key]


def _data_the_method_needs(cfg: DictConfig, factory) -> None:
    """A method that declares a meta set (``Method.meta_per_class``) gets one when
    ``data.meta_per_class`` is left at 0: in the config, so that the run's hash, folder and
    fork all see the data it trains on."""
    if cfg.data.get("meta_per_class"):
        return
    need = getattr(factory, "meta_per_class", 0)
    if isinstance(need, int) and need > 0:
        cfg.data.meta_per_class = need


def split_args(args: list[str]) -> tuple[list[str], list[str]]:
    """Separate YAML file arguments from ``key=value`` overrides."""
    paths = [a for a in args if "=" not in a]
    for path in paths:
        if not path.endswith((".yaml", ".yml")) and not Path(path).is_file():
            raise LtBenchError(
                f"argument {path!r} is neither a YAML file nor key=value (e.g. method=dv)"
            )
    return paths, [a for a in args if "=" in a]


def to_dict(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """``{'a': {'b': 1}}`` → ``{'a.b': 1}`` (lists kept as values)."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out

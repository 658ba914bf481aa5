"""The public entry points: build a registered method or loss by name, with validated options.

A method's options are its own and those of its loss (``build_method("dv", counts,
loss="focal", gamma=1)``): the loss is built here and handed to the method as ``loss_fn``, so the
plugin contract (``lt_bench.method``) needs nothing from the registry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from lt_bench.errors import LtBenchError
from lt_bench.method import Method, as_class_counts
from lt_bench.registry import Entry, accepts_any, factory_options, get_registry


@dataclass(frozen=True)
class MethodSpec:
    """The registry's one answer on a method with a loss: which options it takes, with their
    defaults, and which of them belong to its loss. Every question about a method's options
    (the config's defaults, the checks, the build, the tracker's params) reads it."""

    entry: Entry
    loss: str | None  # the loss in effect (the one given, else the method's default); None: none
    own: dict  # the method's own options, with their defaults (None: required)
    loss_options: dict  # its loss's options that the method does not also have
    takes_any: bool  # a plain factory with ``**options``: nothing is checked

    @property
    def defaults(self) -> dict[str, object]:
        return {**self.own, **self.loss_options}

    def accepted(self) -> set[str] | None:
        return None if self.takes_any else set(self.defaults)

    def check(self, options: dict) -> MethodSpec:
        """Itself, after checking that the method takes ``options`` (finite numbers, known keys)."""
        get_registry().check_options("methods", self.entry.name, options,
                                     allowed=None if self.takes_any else self.defaults)
        return self

    def build(self, class_counts, options: dict) -> Method:
        """The method on ``class_counts``, its loss built here and passed in as ``loss_fn``."""
        options = dict(options)
        if self.loss is not None:
            loss_options = {k: options.pop(k) for k in list(options) if k in self.loss_options}
            options.update(loss=self.loss,
                           loss_fn=build_loss(self.loss, class_counts, **loss_options))
        return get_registry().construct("methods", self.entry, class_counts, **options)


def method_spec(name: str, loss: str | None = None) -> MethodSpec:
    """What the registry says of method ``name`` with ``loss`` (None: its default loss)."""
    registry = get_registry()
    loss_entry = None
    if loss:
        try:
            loss_entry = registry.get("losses", loss)
        except LtBenchError:
            pass  # named by ``_spec`` if the method takes a loss
    return _spec(registry.get("methods", name), loss or None, loss_entry)


@lru_cache(maxsize=256)
def _spec(entry: Entry, loss: str | None, loss_entry: Entry | None) -> MethodSpec:
    # worked out once per (method, loss) entries: a re-registered factory is a new entry
    own = factory_options(entry.factory)
    if "loss" not in own:  # a plain factory, not a Method class: its own options only
        return MethodSpec(entry, None, own, {}, accepts_any(entry.factory))
    loss = loss or own["loss"]
    if loss and (loss_entry is None or loss_entry.name != loss):
        loss_entry = get_registry().get("losses", loss)  # the default, or a misspelt one named
    loss_options = ({} if loss_entry is None else
                    {k: v for k, v in factory_options(loss_entry.factory).items()
                     if k not in own})
    return MethodSpec(entry, loss or None, own, loss_options, False)


def method_options(name: str, loss: str | None = None) -> dict[str, object]:
    """Every option a method accepts (its own and those of its loss) with the defaults."""
    return method_spec(name, loss).defaults


def accepted_options(name: str, loss: str | None = None) -> set[str] | None:
    """The names of the options method ``name`` takes with ``loss``, as ``check_method`` checks
    them; None when it takes any (a plain factory with ``**options``)."""
    return method_spec(name, loss).accepted()


def build_loss(name: str, class_counts, **options) -> Callable:
    """A registered per-sample loss ``(logits, targets) -> [B]``."""
    return get_registry().build("losses", name, as_class_counts(class_counts), **options)


def check_method(name: str, options: dict) -> MethodSpec:
    """What the registry says of method ``name``, after checking that it takes ``options``."""
    return method_spec(name, options.get("loss")).check(options)


def build_method(name: str, class_counts, **options) -> Method:
    """A registered re-weighting method as a criterion module.

    >>> criterion = build_method("dv", [5000, 500, 50], start_epoch=160)
    >>> loss = criterion(logits, targets)  # doctest: +SKIP
    >>> criterion.end_epoch()              # doctest: +SKIP
    """
    return construct_method(check_method(name, options), class_counts, options)


def construct_method(spec: MethodSpec, class_counts, options: dict) -> Method:
    """The method ``spec`` describes, with ``options`` that ``check_method`` has checked."""
    return spec.build(class_counts, options)

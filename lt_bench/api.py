"""The public entry points: build a registered method or loss by name, with validated options.

A method's options are its own and those of its loss (``build_method("dv", counts,
loss="focal", gamma=1)``): the loss is built here and handed to the method as ``loss_fn``, so the
plugin contract (``lt_bench.method``) needs nothing from the registry.
"""

from __future__ import annotations

from collections.abc import Callable

from lt_bench.method import Method, as_class_counts
from lt_bench.registry import accepts_any, factory_options, get_registry


def method_options(name: str, loss: str | None = None) -> dict[str, object]:
    """Every option a method accepts (its own and those of its loss) with the defaults."""
    registry = get_registry()
    options = factory_options(registry.get("methods", name).factory)
    loss_name = loss or options.get("loss")
    if loss_name:
        loss_options = factory_options(registry.get("losses", loss_name).factory)
        options.update({k: v for k, v in loss_options.items() if k not in options})
    return options


def accepted_options(name: str, loss: str | None = None) -> set[str] | None:
    """The names of the options method ``name`` takes with ``loss``, as ``check_method`` checks
    them; None when it takes any (a plain factory with ``**options``)."""
    factory = get_registry().get("methods", name).factory
    own = factory_options(factory)
    if "loss" in own:
        return set(method_options(name, loss))
    return None if accepts_any(factory) else set(own)


def build_loss(name: str, class_counts, **options) -> Callable:
    """A registered per-sample loss ``(logits, targets) -> [B]``."""
    return get_registry().build("losses", name, as_class_counts(class_counts), **options)


def check_method(name: str, options: dict):
    """The registry entry of method ``name``, after checking that it takes ``options``."""
    registry = get_registry()
    entry = registry.get("methods", name)
    own = factory_options(entry.factory)
    if "loss" not in own:  # a plain factory, not a Method class: its own options only
        return registry.check_options("methods", name, options)
    return registry.check_options("methods", name, options,
                                  allowed=method_options(name, options.get("loss")))


def build_method(name: str, class_counts, **options) -> Method:
    """A registered re-weighting method as a criterion module.

    >>> criterion = build_method("dv", [5000, 500, 50], start_epoch=160)
    >>> loss = criterion(logits, targets)  # doctest: +SKIP
    >>> criterion.end_epoch()              # doctest: +SKIP
    """
    return construct_method(check_method(name, options), class_counts, options)


def construct_method(entry, class_counts, options: dict) -> Method:
    """The method of registry ``entry``, whose ``options`` ``check_method`` has checked, built on
    ``class_counts`` (its loss built here and passed in as ``loss_fn``)."""
    options = dict(options)
    own = factory_options(entry.factory)
    if "loss" in own:
        loss = options.get("loss") or own["loss"]
        loss_keys = set(method_options(entry.name, loss)) - set(own)
        loss_options = {k: options.pop(k) for k in list(options) if k in loss_keys}
        options.update(loss=loss, loss_fn=build_loss(loss, class_counts, **loss_options))
    return get_registry().construct("methods", entry, class_counts, **options)

"""The public entry points: build a registered method or loss by name, with validated options."""

from __future__ import annotations

import inspect
from collections.abc import Callable

from lt_bench.errors import LtBenchError, closest
from lt_bench.method import Method, as_class_counts
from lt_bench.registry import get_registry


def factory_options(factory: Callable) -> dict[str, object]:
    """Keyword options of a plain factory function (not a Method class) with their defaults."""
    if isinstance(factory, type) and issubclass(factory, Method):
        return factory.options()
    params = list(inspect.signature(factory).parameters.values())[1:]  # skip class_counts
    return {p.name: (None if p.default is p.empty else p.default)
            for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def _accepts_any(factory: Callable) -> bool:
    target = factory.__init__ if isinstance(factory, type) else factory
    return any(p.kind is p.VAR_KEYWORD for p in inspect.signature(target).parameters.values()) \
        and not (isinstance(factory, type) and issubclass(factory, Method))


def _check_options(kind: str, name: str, given: dict, allowed: dict) -> None:
    for key in given:
        if key not in allowed:
            listed = ", ".join(sorted(allowed)) or "none"
            raise LtBenchError(
                f"{kind} {name!r} has no option {key!r}{closest(key, allowed)}; "
                f"its options: {listed}"
            )


def method_options(name: str, loss: str | None = None) -> dict[str, object]:
    """Every option a method accepts (its own and those of its loss) with the defaults."""
    entry = get_registry().get("methods", name)
    options = factory_options(entry.factory)
    loss_name = loss or options.get("loss")
    if loss_name:
        loss_entry = get_registry().get("losses", loss_name)
        options.update({k: v for k, v in factory_options(loss_entry.factory).items()
                        if k not in options})
    return options


def build_loss(name: str, class_counts, **options) -> Callable:
    """A registered per-sample loss ``(logits, targets) -> [B]``."""
    entry = get_registry().get("losses", name)
    if not _accepts_any(entry.factory):
        _check_options("loss", name, options, factory_options(entry.factory))
    return entry.factory(as_class_counts(class_counts), **options)


def check_method(name: str, options: dict):
    """The registry entry of method ``name``, after checking that it takes ``options``."""
    entry = get_registry().get("methods", name)
    if not _accepts_any(entry.factory):
        _check_options("method", name, options, method_options(name, options.get("loss")))
    return entry


def build_method(name: str, class_counts, **options) -> Method:
    """A registered re-weighting method as a criterion module.

    >>> criterion = build_method("dv", [5000, 500, 50], start_epoch=160)
    >>> loss = criterion(logits, targets)  # doctest: +SKIP
    >>> criterion.end_epoch()              # doctest: +SKIP
    """
    entry = check_method(name, options)
    try:
        return entry.factory(class_counts, **options)
    except TypeError as exc:
        raise LtBenchError(f"method {name!r} (plugin {entry.plugin!r}): {exc}") from exc

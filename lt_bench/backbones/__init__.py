"""Backbones: build a registered network by name with validated options.

The built-ins (``resnet32``, ``resnet50``, ``vit_b_16``, ``vl_ltr``) are registered by the plugin
``lt_bench_plugins.backbones``; a third-party plugin registers more through the hook
``lt_bench_register_backbones``. A factory is ``factory(num_classes, **options)``; one that
declares a ``class_names`` parameter also receives the data set's class names.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

from torch import nn

from lt_bench.errors import LtBenchError
from lt_bench.registry import accepts_any, factory_options, get_registry

#: the parameter through which a factory asks for the data set's class names
CLASS_NAMES = "class_names"


def wants_class_names(factory) -> bool:
    """Whether the factory declares a ``class_names`` parameter."""
    target = factory.__init__ if isinstance(factory, type) else factory
    try:
        return CLASS_NAMES in inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False


def backbone_options(name: str) -> dict[str, object]:
    """The options of a registered backbone with their defaults (``class_names`` excluded)."""
    entry = get_registry().get("backbones", name)
    options = factory_options(entry.factory)
    options.pop(CLASS_NAMES, None)
    return options


def check_backbone(name: str, options: dict):
    """The registry entry of backbone ``name``, after checking that it takes ``options``."""
    registry = get_registry()
    if accepts_any(registry.get("backbones", name).factory):
        return registry.check_options("backbones", name, options)
    # class_names comes from the data set: not one of the options a user may give or is shown
    return registry.check_options("backbones", name, options, allowed=backbone_options(name))


def build_backbone(name: str, num_classes: int, *, class_names: Sequence[str] | None = None,
                   **options) -> nn.Module:
    """A registered backbone with ``num_classes`` outputs.

    Unknown options are an ``LtBenchError`` naming the option and listing the valid ones.
    ``class_names`` is passed on only to factories that declare such a parameter.

    >>> model = build_backbone("resnet32", 100)
    >>> model = build_backbone("vl_ltr", 5, tower="tiny", class_names=["a", "b", "c", "d", "e"])
    """
    entry = check_backbone(name, options)
    if int(num_classes) != num_classes or num_classes < 1:
        raise LtBenchError(f"backbone {name!r}: num_classes must be a whole number >= 1, "
                           f"got {num_classes!r}")
    if class_names is not None:
        class_names = [str(c) for c in class_names]
        if len(class_names) != num_classes:
            raise LtBenchError(f"backbone {name!r}: {len(class_names)} class names given for "
                               f"{num_classes} classes")
    if wants_class_names(entry.factory):
        options[CLASS_NAMES] = class_names
    return get_registry().build("backbones", name, int(num_classes), **options)


__all__ = ["backbone_options", "build_backbone", "wants_class_names"]

"""A run config's method section from what was typed, in any order (``config.load_config``).

* A method option typed on its own (``method.beta=0.5``, a file's ``method: {beta: 0.5}``)
  applies to the method finally selected, typed before or after ``method=NAME``: other typed keys
  win over a group's file whatever the order, and so does it. One typed before another method
  was selected, and which that method does not take, is dropped, and said.
* Options written with a name (``method: {name: dv, convention: authors}``) belong to that
  method: when another method is selected after them they are dropped, and said.

Typed options apply in the order typed. What is dropped comes back as one line each, never
silently: ``lt-bench train method=effective_number method.beta=0.99 method=dv`` trains dv and says
that ``method.beta`` went.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from lt_bench.errors import LtBenchError
from lt_bench.registry import get_registry


def _show(options: dict) -> str:
    return ", ".join(f"method.{k}={v if isinstance(v, str) else json.dumps(v)}"
                     for k, v in options.items())


def _where(source: str) -> str:
    return "" if source.startswith("override ") else f" (in {source})"


def options_taken(name: str, loss: Any, plugins=()) -> set[str] | None:
    """The options method ``name`` takes with that loss; None when it takes any, or when the
    method or loss is misspelt (the run's checks name it with the closest one)."""
    from lt_bench.api import accepted_options  # here, not at the top: it imports torch

    get_registry(plugins or ())  # a plugin that fails to load says so, here
    try:
        return accepted_options(name, loss if isinstance(loss, str) else None)
    except LtBenchError:
        return None


@dataclass
class MethodArgs:
    """Every typed ``method`` value, with its position among the arguments and its source."""

    #: (position, name, options given with the name, source)
    selections: list[tuple[int, Any, dict, str]] = field(default_factory=list)
    #: (position, options typed on their own, source)
    loose: list[tuple[int, dict, str]] = field(default_factory=list)

    def take(self, value: str | dict, position: int, source: str) -> tuple[bool, Any]:
        """Record ``method: value``; (True, the name) when it selects a method."""
        if isinstance(value, str):
            value = {"name": value}
        options = dict(value)
        if "name" not in options:
            self.loose.append((position, options, source))
            return False, None
        name = options.pop("name")
        self.selections.append((position, name, options, source))
        return True, name

    def options(self, final: str, loss: Any, plugins=()) -> tuple[list[tuple[dict, str]],
                                                                   list[str]]:
        """(the options of method ``final`` to merge in order, each with its source; a line for
        each option dropped). ``loss``: the one of the method's group file, if any."""
        other = max((p for p, name, _, _ in self.selections if name != final), default=-1)
        last = max((p for p, *_ in self.selections), default=-1)
        kept: list[tuple[int, dict, str]] = []
        said = []
        for position, name, options, source in self.selections:
            if options and (name != final or position < other):
                said.append(f"{_show(options)}{_where(source)}, given with method {name}, is "
                            f"dropped: method {final} is selected after it")
            elif options:
                kept.append((position, options, source))
        for _, options, _ in sorted(kept + self.loose, key=lambda t: t[0]):
            loss = options.get("loss", loss)
        accepted = None
        if any(p < last for p, _, _ in self.loose):
            accepted = options_taken(final, loss, plugins)
        for position, options, source in self.loose:
            if position < last and accepted is not None:
                dropped = {k: v for k, v in options.items() if k not in accepted}
                options = {k: v for k, v in options.items() if k in accepted}
                said.extend(f"{_show({k: v})}{_where(source)} is dropped: method {final}, "
                            f"selected after it, has no option {k!r}" for k, v in dropped.items())
            if options:
                kept.append((position, options, source))
        return [(o, s) for _, o, s in sorted(kept, key=lambda t: t[0])], said

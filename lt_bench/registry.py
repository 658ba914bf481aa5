"""Finding plugins and collecting what they register.

One ``pluggy.PluginManager("lt_bench")`` holds every plugin: the installed distributions' entry
points in the group ``lt_bench`` (lt-bench's own built-ins among them), then local plugins named
by module or file path. Each registration hook is called once per plugin with a ``register``
callback that remembers which plugin provided which name, so that a clash names both plugins.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

import pluggy

from lt_bench import hookspec
from lt_bench.errors import LtBenchError, closest

ENTRY_POINT_GROUP = "lt_bench"
ENV_VAR = "LT_BENCH_PLUGINS"

#: kind -> (hook name, singular noun used in messages)
KINDS = {
    "methods": ("lt_bench_register_methods", "method"),
    "losses": ("lt_bench_register_losses", "loss"),
    "datasets": ("lt_bench_register_datasets", "dataset"),
    "backbones": ("lt_bench_register_backbones", "backbone"),
    "trackers": ("lt_bench_register_trackers", "tracker"),
}


def factory_options(factory: Callable, positional: int = 1) -> dict[str, object]:
    """A factory's keyword options with their defaults (None: required). A factory that lists
    its own with an ``options()`` classmethod (``lt_bench.Method`` does, over its class tree) is
    asked; otherwise its signature is read, past the ``positional`` leading arguments."""
    listed = getattr(factory, "options", None)
    if isinstance(factory, type) and callable(listed):
        return dict(listed())
    target = factory.__init__ if isinstance(factory, type) else factory
    params = [p for p in inspect.signature(target).parameters.values() if p.name != "self"]
    return {p.name: (None if p.default is p.empty else p.default) for p in params[positional:]
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def accepts_any(factory: Callable) -> bool:
    """Whether the factory takes ``**options`` it does not list (then nothing is checked)."""
    if isinstance(factory, type) and callable(getattr(factory, "options", None)):
        return False
    target = factory.__init__ if isinstance(factory, type) else factory
    return any(p.kind is p.VAR_KEYWORD for p in inspect.signature(target).parameters.values())


@dataclass(frozen=True)
class Entry:
    name: str
    factory: Callable
    plugin: str
    description: str


def describe(factory: Callable) -> str:
    """The first paragraph of the factory's docstring, on one line."""
    doc = (inspect.getdoc(factory) or "").strip()
    return " ".join(doc.split("\n\n")[0].split()) if doc else ""


class Registry:
    """The loaded plugins and the tables of what they registered, built on first use."""

    def __init__(self, plugins: Iterable[str] = ()):
        self.pm = pluggy.PluginManager("lt_bench")
        self.pm.add_hookspecs(hookspec)
        self._tables: dict[str, dict[str, Entry]] = {}
        self._load_entry_points()
        for spec in plugins:
            self.add_plugin(spec)

    # -- discovery ---------------------------------------------------------------------------
    def _load_entry_points(self) -> None:
        for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = getattr(ep.dist, "name", None) or "?"
            try:
                module = ep.load()
            except Exception as exc:  # a broken third-party plugin must not look like our bug
                raise LtBenchError(
                    f"plugin {ep.name!r} (entry point {ep.value!r} of distribution {dist!r}) "
                    f"failed to load: {type(exc).__name__}: {exc}"
                ) from exc
            if self.pm.is_registered(module):
                continue
            name = ep.name if self.pm.get_plugin(ep.name) is None else f"{dist}:{ep.name}"
            self._register(module, name)

    def add_plugin(self, spec: str) -> None:
        """Load a local plugin given as a module name (``my_pkg.plugin``) or a file path."""
        spec = str(spec).strip()
        if not spec:
            return
        looks_like_path = spec.endswith(".py") or os.sep in spec or "/" in spec
        if looks_like_path:
            path = Path(spec).expanduser()
            if not path.is_file():
                raise LtBenchError(
                    f"plugin file {spec!r} not found: give an existing .py file or a module name"
                )
            if self.pm.get_plugin(str(path)) is not None:
                return  # loaded already (a sweep's workers and the config both name it)
            name = f"lt_bench_local_{path.stem}"
            try:
                module_spec = importlib.util.spec_from_file_location(name, path)
                module = importlib.util.module_from_spec(module_spec)
                sys.modules[name] = module
                module_spec.loader.exec_module(module)
            except Exception as exc:
                sys.modules.pop(name, None)
                raise LtBenchError(
                    f"plugin {spec!r} failed to load: {type(exc).__name__}: {exc}"
                ) from exc
            plugin_name = str(path)
        else:
            try:
                module = importlib.import_module(spec)
            except ModuleNotFoundError as exc:
                if exc.name and spec.startswith(exc.name):
                    raise LtBenchError(
                        f"plugin module {spec!r} not found: check the name, install it, or give "
                        "a file path ending in .py"
                    ) from exc
                raise LtBenchError(
                    f"plugin {spec!r} failed to load: {type(exc).__name__}: {exc}"
                ) from exc
            except Exception as exc:
                raise LtBenchError(
                    f"plugin {spec!r} failed to load: {type(exc).__name__}: {exc}"
                ) from exc
            plugin_name = spec
        if not self.pm.is_registered(module):
            self._register(module, plugin_name)
            self._tables.clear()

    def _register(self, module, name: str) -> None:
        try:
            self.pm.register(module, name=name)
            # A hook implementation whose name matches no spec (a typo) fails here, loudly.
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            self.pm.unregister(module)
            raise LtBenchError(f"plugin {name!r} is invalid: {exc}") from exc

    # -- tables ------------------------------------------------------------------------------
    def table(self, kind: str) -> dict[str, Entry]:
        if kind not in self._tables:
            self._tables[kind] = self._collect(kind)
        return self._tables[kind]

    def _collect(self, kind: str) -> dict[str, Entry]:
        hook_name, noun = KINDS[kind]
        table: dict[str, Entry] = {}
        for impl in reversed(getattr(self.pm.hook, hook_name).get_hookimpls()):
            plugin = impl.plugin_name

            def register(name: str, factory: Callable, description: str | None = None,
                         _plugin: str = plugin) -> None:
                if not isinstance(name, str) or not name:
                    raise LtBenchError(f"plugin {_plugin!r} registered a {noun} with no name")
                if name in table:
                    raise LtBenchError(
                        f"{noun} {name!r} is registered twice: by plugin {table[name].plugin!r} "
                        f"and by plugin {_plugin!r}; rename one or remove one plugin"
                    )
                table[name] = Entry(name, factory, _plugin, description or describe(factory))

            try:
                impl.function(**{arg: register for arg in impl.argnames})
            except LtBenchError:
                raise
            except Exception as exc:
                raise LtBenchError(
                    f"plugin {plugin!r} failed in {hook_name}: {type(exc).__name__}: {exc}"
                ) from exc
        return dict(sorted(table.items()))

    def get(self, kind: str, name: str) -> Entry:
        table = self.table(kind)
        if name in table:
            return table[name]
        noun = KINDS[kind][1]
        known = ", ".join(table) or "none (is lt-bench installed? pip install -e .)"
        raise LtBenchError(
            f"unknown {noun} {name!r}{closest(name, table)}; registered: {known}. "
            f"A plugin can add one (README, 'Your own method, data set or backbone')"
        )


    # -- building ----------------------------------------------------------------------------
    def check_options(self, kind: str, name: str, given: dict,
                      allowed: dict | None = None, positional: int = 1) -> Entry:
        """The entry of ``name``, after checking that it takes the ``given`` options (those of
        its factory unless ``allowed`` lists them)."""
        entry = self.get(kind, name)
        for key, value in given.items():  # NaN or inf is never a setting: it turns into a NaN loss
            if isinstance(value, float) and not math.isfinite(value):
                raise LtBenchError(f"{KINDS[kind][1]} {name!r}: option {key}={value} must be a "
                                   "finite number")
        if allowed is None:
            if accepts_any(entry.factory):
                return entry
            allowed = factory_options(entry.factory, positional)
        for key in given:
            if key not in allowed:
                listed = ", ".join(sorted(allowed)) or "none"
                raise LtBenchError(f"{KINDS[kind][1]} {name!r} has no option {key!r}"
                                   f"{closest(key, allowed)}; its options: {listed}")
        return entry

    def build(self, kind: str, name: str, *args, **options):
        """``factory(*args, **options)`` of the registered ``name``, its options checked first:
        the one way every method, loss, data set, backbone and tracker is made."""
        entry = self.check_options(kind, name, options, positional=len(args))
        return self.construct(kind, entry, *args, **options)

    @staticmethod
    def construct(kind: str, entry: Entry, *args, **options):
        """``entry.factory(*args, **options)``, options already checked."""
        try:
            return entry.factory(*args, **options)
        except TypeError as exc:  # a required option missing, say: name the plugin
            raise LtBenchError(f"{KINDS[kind][1]} {entry.name!r} (plugin {entry.plugin!r}): "
                               f"{exc}") from exc


_default: Registry | None = None


def env_plugins() -> list[str]:
    """Plugins named in ``LT_BENCH_PLUGINS``, separated by commas or the path separator."""
    value = os.environ.get(ENV_VAR, "").replace(os.pathsep, ",")
    return [p.strip() for p in value.split(",") if p.strip()]


def get_registry(plugins: Iterable[str] = ()) -> Registry:
    """The process-wide registry, with the ``LT_BENCH_PLUGINS`` plugins and any given here."""
    global _default
    if _default is None:
        _default = Registry(env_plugins())
    for spec in plugins or ():
        _default.add_plugin(spec)
    return _default


def reset_registry() -> None:
    """Forget the loaded plugins (tests; a changed environment)."""
    global _default
    _default = None

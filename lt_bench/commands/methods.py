"""``lt-bench methods``: every registered method, its options and the plugin providing it.

Listing the methods imports every plugin, and with them torch (seconds on a small CPU). The
listing is the same until a plugin's source, the installed distributions or the Python changes,
so it is kept in ``$LT_BENCH_CACHE/methods.json`` (default ``~/.cache/lt_bench``) under a key of
those; a local plugin (``--plugin``, ``LT_BENCH_PLUGINS``) always lists afresh.
"""

from __future__ import annotations

import json

from lt_bench.registry import env_plugins, get_registry

CACHE_NAME = "methods.json"


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "methods", help="list the registered re-weighting methods and their options",
        description="List every registered re-weighting method with its options, their "
                    "defaults, a one-line description and the plugin that provides it. The "
                    "listing is kept in $LT_BENCH_CACHE/methods.json (default ~/.cache/lt_bench) "
                    "until lt_bench, a plugin or the installed packages change.",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list")
    parser.set_defaults(func=run)


def rows() -> list[dict]:
    from lt_bench.api import method_options  # here, not at the top: it imports torch
    from lt_bench.method import declared_needs  # here, not at the top: it imports torch

    return [
        {"name": entry.name, "description": entry.description, "plugin": entry.plugin,
         "options": method_options(entry.name), "needs": declared_needs(entry.factory)}
        for entry in get_registry().table("methods").values()
    ]


def render(table: list[dict]) -> dict[str, str]:
    """The listing as text and as JSON, both kept in the cache so that a cached listing prints
    exactly what a fresh one would (a tuple default stays ``(1, 2)``, not a JSON list)."""
    lines = []
    for row in table:
        lines.append(f"{row['name']}  ({row['plugin']})\n    {row['description']}")
        opts = ", ".join(f"{k}={v!r}" for k, v in row["options"].items())
        lines.append(f"    options: {opts}")
        if row["needs"]:
            lines.append(f"    needs: {'; '.join(row['needs'])}")
    return {"text": "\n".join(lines), "json": json.dumps(table, indent=2, default=repr)}


def source_files() -> list:
    """The files a listing comes from: lt_bench's own package and the top-level package (or
    module) of every ``lt_bench`` entry point, found without importing them."""
    import importlib.util
    from importlib.metadata import entry_points
    from pathlib import Path

    files = set(Path(__file__).parents[1].rglob("*.py"))
    for ep in entry_points(group="lt_bench"):
        try:
            spec = importlib.util.find_spec(ep.value.split(":")[0].split(".")[0])
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            continue  # the registry will say it cannot load it; the key still has its name
        for folder in spec.submodule_search_locations or ():
            files.update(Path(folder).rglob("*.py"))
        if spec.origin and spec.origin.endswith(".py"):
            files.add(Path(spec.origin))
    return sorted(files)


def listing_key(files: list | None = None) -> str:
    """What a listing depends on: the Python, the ``lt_bench`` entry points with their
    distributions' versions, every source file's size and mtime, and the mtime of every folder
    on ``sys.path`` (installing or removing a distribution changes its site-packages folder,
    and with it a plugin's optional dependency)."""
    import hashlib
    import os
    import sys
    from importlib.metadata import entry_points

    points = sorted((ep.name, ep.value, getattr(ep.dist, "name", ""),
                     getattr(ep.dist, "version", "")) for ep in entry_points(group="lt_bench"))
    stats = []
    for path in (source_files() if files is None else files):
        try:
            st = os.stat(path)
            stats.append((str(path), st.st_mtime_ns, st.st_size))
        except OSError:
            stats.append((str(path), None, None))
    here = os.getcwd()  # files come and go in the current folder: it holds no distribution
    folders = [(p, os.stat(p).st_mtime_ns) for p in sys.path
               if p and os.path.isdir(p) and os.path.abspath(p) != here]
    text = json.dumps([sys.version, sys.executable, points, stats, folders], default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def cache_path():
    import os
    from pathlib import Path

    root = os.environ.get("LT_BENCH_CACHE") or "~/.cache/lt_bench"
    return Path(root).expanduser() / CACHE_NAME


def listing(local_plugins: bool) -> dict[str, str]:
    """The rendered listing: from the cache when its key still holds, else made and kept."""
    if local_plugins:
        return render(rows())
    import os

    key, path = listing_key(), cache_path()
    try:
        kept = json.loads(path.read_text())
        if kept.get("key") == key:
            return kept["listing"]
    except (OSError, ValueError, AttributeError, KeyError):
        pass  # no cache, or a damaged one: list afresh
    made = render(rows())
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"key": key, "listing": made}))
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)  # an unwritable cache only means the next listing is slow
    return made


def run(args) -> int:
    made = listing(bool(getattr(args, "plugin", None) or env_plugins()))
    print(made["json"] if args.json else made["text"])
    return 0

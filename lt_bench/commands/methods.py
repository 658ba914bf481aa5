"""``lt-bench methods``: every registered method, its options and the plugin providing it."""

from __future__ import annotations

import json

from lt_bench.api import method_options
from lt_bench.method import declared_needs
from lt_bench.registry import get_registry


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "methods", help="list the registered re-weighting methods and their options",
        description="List every registered re-weighting method with its options, their "
                    "defaults, a one-line description and the plugin that provides it.",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list")
    parser.set_defaults(func=run)


def rows() -> list[dict]:
    return [
        {"name": entry.name, "description": entry.description, "plugin": entry.plugin,
         "options": method_options(entry.name), "needs": declared_needs(entry.factory)}
        for entry in get_registry().table("methods").values()
    ]


def run(args) -> int:
    table = rows()
    if args.json:
        print(json.dumps(table, indent=2, default=repr))
        return 0
    for row in table:
        print(f"{row['name']}  ({row['plugin']})\n    {row['description']}")
        opts = ", ".join(f"{k}={v!r}" for k, v in row["options"].items())
        print(f"    options: {opts}")
        if row["needs"]:
            print(f"    needs: {'; '.join(row['needs'])}")
    return 0

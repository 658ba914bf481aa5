"""The ``lt-bench`` command: one sub-command per module in ``lt_bench.commands``.

Each command module has ``add_parser(subparsers)``, which adds its parser and sets ``run`` (a
function of the parsed arguments returning an exit code) as the parser's default ``func``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from lt_bench import __version__
from lt_bench.errors import LtBenchError
from lt_bench.registry import get_registry

COMMANDS = ["methods", "data", "train", "sweep", "reproduce", "leaderboard", "ui", "anchors",
            "workspace"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lt-bench",
        description="Benchmark loss re-weighting methods on long-tailed image classification.",
        epilog="Run `lt-bench COMMAND --help` for a command's options. Configs take YAML files "
               "and key=value overrides, e.g. `lt-bench train dataset=cifar10_lt method=dv`.",
    )
    parser.add_argument("--version", action="version", version=f"lt-bench {__version__}")
    parser.add_argument(
        "-p", "--plugin", action="append", default=[], metavar="MODULE_OR_FILE",
        help="load a local plugin by module name or .py file path (repeatable; also the "
             "LT_BENCH_PLUGINS environment variable and the `plugins:` config key)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"lt_bench.commands.{name}").add_parser(sub)
    return parser


def show_log_messages() -> None:
    """Non-fatal problems reach the user through the ``lt_bench`` logger (one channel, so an
    API user can route or silence them); the command prints them as ``lt-bench: warning: …``."""
    logger = logging.getLogger("lt_bench")
    if not any(getattr(h, "lt_bench_cli", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("lt-bench: %(levelname)s: %(message)s"))
        handler.lt_bench_cli = True
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value after a flag (`reproduce NAME --report-only seeds=5`): argparse takes a command's
    # positionals in one stretch, so the later ones come back here and join them
    if extra and isinstance(getattr(args, "args", None), list) and not any(
            e.startswith("-") for e in extra):
        args.args.extend(extra)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    show_log_messages()
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:  # commands import their dependencies (torch, omegaconf, mlflow) inside ``run``
        if args.plugin:
            get_registry(args.plugin)
        return int(args.func(args) or 0)
    except LtBenchError as exc:
        print(f"lt-bench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lt-bench: interrupted", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        # SIGTERM (raised as KeyboardInterrupt) landing while a library defines a class comes
        # back wrapped: "Error calling __set_name__ on 'cached_property'"
        if isinstance(exc.__cause__ or exc.__context__, KeyboardInterrupt):
            print("lt-bench: interrupted", file=sys.stderr)
            return 130
        raise
    except ModuleNotFoundError as exc:
        if not exc.name or exc.name.split(".")[0] in ("lt_bench", "lt_bench_plugins"):
            raise  # our own module missing is a bug or a broken install: show it whole
        print(f"lt-bench: error: this command needs the package {exc.name.split('.')[0]!r}, "
              "which is not installed: pip install it (pip install -e . installs them all; "
              "a machine without a package index can carry wheels, see "
              "benchmarks/device_check.md)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

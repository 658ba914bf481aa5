"""Every YAML lt_bench reads from a user (a config, a study, an anchors sentence file, a typed
override) goes through one guard: a size limit, UTF-8 or one line, a depth limit and a limit on
the nodes the document expands to with its aliases followed.

A shared file is data: it must not hang the command (a "billion laughs" of nested aliases,
9^9 nodes from a few hundred bytes) nor end it in a traceback (a ``RecursionError`` of a
200-deep list, a ``UnicodeDecodeError``). PyYAML composes aliases as references to one node, so
the document is composed first (cheap), its expanded size counted with a budget, and only then
constructed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from lt_bench.errors import LtBenchError

MAX_BYTES = 4 * 2**20  # the largest shipped config is a few kB; a study about 10 kB
MAX_DEPTH = 64
MAX_NODES = 200_000


def read_yaml_file(path: Path, what: str = "config file") -> Any:
    """The YAML document in ``path`` (None when empty), guarded; one line naming the file on
    any failure."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise LtBenchError(f"{what} {str(path)!r} is {size / 2**20:.0f} MiB, over the "
                               f"{MAX_BYTES // 2**20} MiB a YAML file may have here: give the "
                               "file meant, not a data file")
        raw = path.read_bytes()
    except FileNotFoundError:
        raise LtBenchError(f"{what} {str(path)!r} not found") from None
    except IsADirectoryError:
        raise LtBenchError(f"{what} {str(path)!r} is a folder, not a YAML file") from None
    except OSError as exc:
        raise LtBenchError(f"{what} {str(path)!r} cannot be read: {exc.strerror}") from None
    return load_yaml(raw, f"{what} {str(path)!r}")


def load_yaml(raw: bytes | str, where: str) -> Any:
    """The YAML document in ``raw``, guarded (module docstring)."""
    if isinstance(raw, bytes):
        if len(raw) > MAX_BYTES:
            raise LtBenchError(f"{where} is over {MAX_BYTES // 2**20} MiB")
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise LtBenchError(f"{where} is not UTF-8 text (byte {exc.start}: "
                               f"{raw[exc.start:exc.start + 1]!r}): save it as UTF-8") from None
    elif len(raw) > MAX_BYTES:
        raise LtBenchError(f"{where} is over {MAX_BYTES // 2**20} MiB")
    try:
        loader = yaml.SafeLoader(raw)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            _check_size(node, where)
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        first = " ".join(str(exc).split())[:300]
        raise LtBenchError(f"{where} is not valid YAML: {first}") from None
    except RecursionError:
        raise LtBenchError(f"{where} nests deeper than a config can (over {MAX_DEPTH} "
                           "levels)") from None


def _check_size(root: yaml.Node, where: str) -> None:
    """Walk the node graph as construction would, aliases followed, within the budgets."""
    budget = MAX_NODES
    stack = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        budget -= 1
        if budget < 0:
            raise LtBenchError(f"{where} expands to over {MAX_NODES:,} values (aliases of "
                               "aliases, a 'billion laughs'?): refused")
        if depth > MAX_DEPTH:
            raise LtBenchError(f"{where} nests deeper than {MAX_DEPTH} levels: refused")
        if isinstance(node, yaml.SequenceNode):
            stack.extend((child, depth + 1) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                stack.append((key, depth + 1))
                stack.append((value, depth + 1))

"""The package's shape: the import graph of ``lt_bench`` has no circle, a single run imports
nothing of the sweep above it, and every module path spelt as a string imports."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lt_bench"
SWEEP = "lt_bench.sweep"
#: the modules a single run starts from (``lt-bench train``, a sweep's worker for one run)
RUN_ENTRIES = ("lt_bench.run.train",)


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(tree: ast.AST, name: str, is_package: bool, known: set[str]) -> set[str]:
    """The package's modules that ``tree`` (module ``name``) imports, at any depth of the file
    (function-level imports included): ``from a import b`` counts ``a.b`` when that is a module,
    else ``a``."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[:len(package) - node.level + 1]
                base = ".".join([*package, *([base] if base else [])])
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # a name inside a module: the module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Module → the package's modules it imports."""
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    known = set(files)
    return {name: imported(ast.parse(path.read_text()), name, path.name == "__init__.py", known)
            for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles: strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(graph.get(node, ()))
    return seen


def test_the_package_has_no_import_circle():
    assert cycles(import_graph()) == []


def test_a_single_run_imports_nothing_of_the_sweep():
    graph = import_graph()
    for entry in RUN_ENTRIES:
        assert entry in graph
        above = sorted(m for m in reachable(graph, entry)
                       if m == SWEEP or m.startswith(SWEEP + "."))
        assert above == [], f"{entry} reaches the sweep through {above}"


#: the wings of one pipeline, lowest first: a wing imports those below it, never one above
WINGS = ("workspace", "run", "sweep", "compare")
#: modules allowed flat in lt_bench/: the front door and the plugin contract
FRONT_DOOR = {"lt_bench", "lt_bench.__main__", "lt_bench.cli", "lt_bench.errors",
              "lt_bench.hookspec", "lt_bench.registry", "lt_bench.api", "lt_bench.method"}


def wing_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in WINGS) else None


def upward(graph: dict[str, set[str]]) -> list[str]:
    """The imports from a wing to one above it in ``WINGS`` (function-level ones included)."""
    rank = {w: i for i, w in enumerate(WINGS)}
    return sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets
                  if wing_of(a) in rank and wing_of(b) in rank
                  and rank[wing_of(b)] > rank[wing_of(a)])


def test_the_wings_import_downward_only():
    assert upward(import_graph()) == []


def test_nothing_but_the_front_door_sits_flat_in_the_package():
    flat = {module_name(p, PACKAGE) for p in PACKAGE.glob("*.py")}
    assert flat - FRONT_DOOR == set()


def test_the_checks_find_what_they_look_for(tmp_path):
    """The graph sees function-level and relative imports, and a circle is found."""
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from .b import thing\n")
    (package / "a.py").write_text("def f():\n    from pkg.sub import b\n")
    (package / "sub" / "b.py").write_text("from ..a import f\nthing = 1\n")
    (package / "c.py").write_text("import pkg.a\n")
    graph = import_graph(package)
    assert graph["pkg.a"] == {"pkg.sub.b"} and graph["pkg.sub.b"] == {"pkg.a"}
    assert graph["pkg.sub"] == {"pkg.sub.b"} and graph["pkg.c"] == {"pkg.a"}
    assert cycles(graph) == [["pkg.a", "pkg.sub.b"]]
    assert reachable(graph, "pkg.c") == {"pkg.c", "pkg.a", "pkg.sub.b"}
    wings = {"lt_bench.run.a": {"lt_bench.compare.b", "lt_bench.workspace.c"},
             "lt_bench.compare.b": {"lt_bench.run.a"}, "lt_bench.workspace.c": set()}
    assert upward(wings) == ["lt_bench.run.a -> lt_bench.compare.b"]


MODULE_PATH = re.compile(r"^lt_bench(\.\w+)+(:\w+)?$")


def module_paths_in_strings() -> set[str]:
    """Every string constant in the package that is a dotted ``lt_bench`` path
    (``lt_bench.x`` or ``lt_bench.x:function``)."""
    found = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and MODULE_PATH.match(node.value):
                found.add(node.value)
    return found


@pytest.mark.parametrize("target", sorted(module_paths_in_strings()))
def test_every_module_path_in_a_string_imports(target):
    module, _, name = target.partition(":")
    try:
        imported_module = importlib.import_module(module)
    except ModuleNotFoundError:  # a dotted name inside a module (``lt_bench.api.build_method``)
        module, _, name = module.rpartition(".")
        imported_module = importlib.import_module(module)
    if name:
        assert callable(getattr(imported_module, name))


#: the guide's bound on a module: one that grows past it is doing two jobs
MAX_LINES = 400


def too_long(root: Path, limit: int = MAX_LINES) -> list[str]:
    return [f"{p.relative_to(root)}: {n} lines" for p in sorted(root.rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > limit]


def test_no_module_is_over_400_lines(tmp_path):
    (tmp_path / "long.py").write_text("x = 1\n" * (MAX_LINES + 1))
    (tmp_path / "short.py").write_text("x = 1\n" * MAX_LINES)
    assert too_long(tmp_path) == [f"long.py: {MAX_LINES + 1} lines"]  # the check itself
    root = PACKAGE.parent
    found = [line for folder in ("lt_bench", "plugins", "benchmarks")
             for line in too_long(root / folder)]
    assert not found, "split these modules: " + "; ".join(found)


def unexplained_inner_imports(root: Path = PACKAGE) -> list[str]:
    """``file:line`` of each import of the package inside a function with no comment on its
    line or the line above: an import stays out of the module's top only for a reason (start-up
    time: it would load torch), said where it stands (issue 38)."""
    found = []
    for path in sorted(root.rglob("*.py")):
        lines = path.read_text().splitlines()
        for fn in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if (isinstance(node, ast.ImportFrom) and node.level == 0
                        and (node.module or "").split(".")[0] == root.name):
                    here = lines[node.lineno - 1]
                    above = lines[node.lineno - 2].strip() if node.lineno > 1 else ""
                    if "#" not in here and not above.startswith("#"):
                        found.append(f"{path.relative_to(root.parent)}:{node.lineno}")
    return sorted(set(found))


def test_an_import_inside_a_function_says_why():
    assert unexplained_inner_imports() == []


def test_the_inner_import_check_finds_a_silent_one(tmp_path):
    package = tmp_path / "lt_bench"
    package.mkdir()
    (package / "a.py").write_text("def f():\n    from lt_bench.b import x\n\n\n"
                                  "def g():\n    from lt_bench.b import y  # loads torch\n\n\n"
                                  "def h():\n    # loads torch\n    from lt_bench.b import z\n")
    assert unexplained_inner_imports(package) == ["lt_bench/a.py:2"]


#: what a test file may be named for besides a wing of the package or a front-door module
OUTSIDE_THE_PACKAGE = {"plugins", "benchmarks", "experiments", "configs", "wheel", "structure"}


def test_each_test_file_is_named_for_what_it_covers():
    """tests/ mirrors the wings: ``test_<wing>[_<module>…].py`` or a front-door module, never an
    issue or a round (issue 38)."""
    wings = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    front = {name.rpartition(".")[2] for name in FRONT_DOOR}
    allowed = wings | front | OUTSIDE_THE_PACKAGE
    tests = Path(__file__).parent
    named = {p.stem.removeprefix("test_") for p in tests.glob("test_*.py")}
    assert not {n for n in named if n.split("_")[0] not in allowed
                and not any(n == a or n.startswith(a + "_") for a in allowed)}

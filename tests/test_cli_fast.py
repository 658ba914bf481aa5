"""Commands that answer at once: ``--version`` and ``methods`` import no torch, MLflow or
OmegaConf, so that their speed cannot regress unseen (docs/BENCHMARKS.md, "Command start-up")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

HEAVY = {"torch", "torchvision", "mlflow", "omegaconf", "scipy", "pandas", "matplotlib"}

#: runs the CLI as `lt-bench` does, then prints the top-level modules it imported
RUNNER = textwrap.dedent("""
    import json, sys
    from lt_bench.cli import main
    try:
        code = main(sys.argv[1:])
    except SystemExit as exc:
        code = exc.code
    print("MODULES " + json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
    sys.exit(code)
""")


def command(*args: str, env: dict | None = None) -> tuple[str, set[str]]:
    """(what ``lt-bench ARGS`` printed, the top-level modules it imported)."""
    out = subprocess.run([sys.executable, "-c", RUNNER, *args], capture_output=True, text=True,
                         env={**os.environ, **(env or {})}, check=True)
    printed, _, modules = out.stdout.rpartition("MODULES ")
    return printed, set(json.loads(modules))


def test_version_imports_nothing_heavy():
    printed, modules = command("--version")
    assert printed.strip() == "lt-bench 0.1.0"
    assert not modules & HEAVY


def test_methods_lists_from_its_cache_without_torch(tmp_path):
    env = {"LT_BENCH_CACHE": str(tmp_path), "LT_BENCH_PLUGINS": ""}
    fresh, loaded = command("methods", env=env)  # the first listing imports every plugin
    assert "torch" in loaded and (tmp_path / "methods.json").is_file()
    for args in (["methods"], ["methods", "--json"]):
        cached, modules = command(*args, env=env)
        assert not modules & HEAVY
        if args[-1] == "--json":
            rows = {row["name"]: row for row in json.loads(cached)}
            assert rows["effective_number"]["options"]["beta"] == 0.9999
        else:
            assert cached == fresh
    assert "dv  (class_volume)" in fresh and "options: " in fresh


def test_a_local_plugin_is_always_listed_afresh(tmp_path):
    plugin = tmp_path / "my_plugin.py"
    plugin.write_text(textwrap.dedent('''
        import lt_bench
        from lt_bench_plugins.weighting import InverseFrequency

        class Halved(InverseFrequency):
            """Half the inverse frequency."""

        @lt_bench.hookimpl
        def lt_bench_register_methods(register):
            register("halved_here", Halved)
    '''))
    env = {"LT_BENCH_CACHE": str(tmp_path / "cache")}
    command("methods", env={**env, "LT_BENCH_PLUGINS": ""})  # fills the cache without it
    printed, _ = command("methods", env={**env, "LT_BENCH_PLUGINS": str(plugin)})
    assert "halved_here" in printed
    printed, _ = command("-p", str(plugin), "methods", env={**env, "LT_BENCH_PLUGINS": ""})
    assert "halved_here" in printed


def test_the_listing_key_follows_the_sources(tmp_path):
    from lt_bench.commands.methods import listing_key

    source = tmp_path / "plugin.py"
    source.write_text("x = 1\n")
    before = listing_key([source])
    assert listing_key([source]) == before
    os.utime(source, ns=(0, source.stat().st_mtime_ns + 10**9))  # edited a second later
    assert listing_key([source]) != before
    source.write_text("x = 22\n")
    os.utime(source, ns=(0, 0))
    edited = listing_key([source])
    source.write_text("x = 2\n")  # the same mtime and another size
    os.utime(source, ns=(0, 0))
    assert listing_key([source]) != edited


def test_the_built_in_plugins_are_among_the_sources():
    from importlib.util import find_spec

    from lt_bench.commands.methods import source_files

    files = {Path(f).resolve() for f in source_files()}
    for module in ("lt_bench_plugins.class_volume", "lt_bench.method"):
        assert Path(find_spec(module).origin).resolve() in files

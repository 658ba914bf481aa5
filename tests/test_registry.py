"""Plugin discovery: entry points of an installed distribution, file paths, module names, the
environment variable, and the errors for clashes, broken plugins and misspelt hooks."""

import json
import subprocess
import sys
import textwrap

import pytest

import lt_bench
from lt_bench import LtBenchError
from lt_bench.registry import Registry, get_registry, reset_registry

PLUGIN = '''
import lt_bench

class Halved(lt_bench.Method):
    """Uniform weights of one half (a test method)."""

    def raw_weights(self):
        return self.class_counts * 0 + 0.5

@lt_bench.hookimpl
def lt_bench_register_methods(register):
    register("{name}", Halved)
'''


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch):
    monkeypatch.delenv("LT_BENCH_PLUGINS", raising=False)
    reset_registry()
    yield
    reset_registry()


def write_plugin(path, name="halved"):
    path.write_text(PLUGIN.format(name=name))
    return path


def test_builtins_are_found_through_entry_points():
    table = get_registry().table("methods")
    for name in ("ce", "inverse_frequency", "effective_number", "focal", "dv", "pv", "bv"):
        assert name in table
    assert table["effective_number"].plugin == "weighting"


def test_plugin_from_a_file_path(tmp_path):
    path = write_plugin(tmp_path / "my_methods.py")
    registry = Registry([str(path)])
    entry = registry.get("methods", "halved")
    assert entry.plugin == str(path)
    assert entry.description == "Uniform weights of one half (a test method)."
    criterion = entry.factory([10, 5], normalization="none")
    assert criterion.class_weights.tolist() == [0.5, 0.5]


def test_plugin_from_module_name_via_environment(tmp_path, monkeypatch):
    write_plugin(tmp_path / "env_plugin_mod.py", name="from_env")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("LT_BENCH_PLUGINS", "env_plugin_mod")
    criterion = lt_bench.build_method("from_env", [3, 4], normalization="none")
    assert criterion.class_weights.tolist() == [0.5, 0.5]


def test_two_plugins_registering_one_name_names_both(tmp_path):
    a = write_plugin(tmp_path / "a_plugin.py", name="same")
    b = write_plugin(tmp_path / "b_plugin.py", name="same")
    with pytest.raises(LtBenchError, match="registered twice") as info:
        Registry([str(a), str(b)]).table("methods")
    assert str(a) in str(info.value) and str(b) in str(info.value)


def test_builtin_name_clash_names_the_builtin(tmp_path):
    path = write_plugin(tmp_path / "clash.py", name="dv")
    with pytest.raises(LtBenchError, match="'class_volume'"):
        Registry([str(path)]).table("methods")


def test_plugin_raising_while_loading_is_named(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(LtBenchError, match=r"broken\.py.*failed to load.*boom"):
        Registry([str(path)])


def test_plugin_raising_while_registering_is_named(tmp_path):
    path = tmp_path / "bad_register.py"
    path.write_text(textwrap.dedent('''
        import lt_bench

        @lt_bench.hookimpl
        def lt_bench_register_methods(register):
            raise ValueError("nope")
    '''))
    with pytest.raises(LtBenchError, match=r"bad_register\.py.*lt_bench_register_methods.*nope"):
        Registry([str(path)]).table("methods")


def test_misspelt_hook_fails_loudly(tmp_path):
    path = tmp_path / "typo.py"
    path.write_text(textwrap.dedent('''
        import lt_bench

        @lt_bench.hookimpl
        def lt_bench_register_method(register):
            pass
    '''))
    with pytest.raises(LtBenchError, match="lt_bench_register_method"):
        Registry([str(path)])


def test_missing_plugin_file_and_module():
    with pytest.raises(LtBenchError, match="not found"):
        Registry(["./no/such/plugin.py"])
    with pytest.raises(LtBenchError, match="module 'no_such_plugin_module' not found"):
        Registry(["no_such_plugin_module"])


@pytest.fixture(scope="module")
def installed_distribution(tmp_path_factory):
    """A tiny third-party distribution, really installed by pip into a target folder."""
    src = tmp_path_factory.mktemp("src")
    (src / "lt_bench_thirdparty_demo.py").write_text(PLUGIN.format(name="thirdparty_halved"))
    (src / "pyproject.toml").write_text(textwrap.dedent('''
        [build-system]
        requires = ["setuptools>=64"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "lt-bench-thirdparty-demo"
        version = "0.0.1"

        [project.entry-points.lt_bench]
        thirdparty = "lt_bench_thirdparty_demo"

        [tool.setuptools]
        py-modules = ["lt_bench_thirdparty_demo"]
    '''))
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    "--no-build-isolation", "--target", str(target), str(src)],
                   check=True, capture_output=True)
    return target


def test_third_party_plugin_found_through_a_real_entry_point(installed_distribution, monkeypatch):
    monkeypatch.syspath_prepend(str(installed_distribution))
    entry = Registry().get("methods", "thirdparty_halved")
    assert entry.plugin == "thirdparty"
    env = {"PYTHONPATH": str(installed_distribution)}
    out = subprocess.run([sys.executable, "-m", "lt_bench", "methods", "--json"],
                         capture_output=True, text=True, check=True,
                         env={**__import__("os").environ, **env})
    rows = {row["name"]: row for row in json.loads(out.stdout)}
    assert rows["thirdparty_halved"]["plugin"] == "thirdparty"


def test_methods_json_lists_every_method_with_options():
    out = subprocess.run([sys.executable, "-m", "lt_bench", "methods", "--json"],
                         capture_output=True, text=True, check=True)
    rows = {row["name"]: row for row in json.loads(out.stdout)}
    assert {"ce", "inverse_frequency", "effective_number", "focal", "dv", "pv", "bv"} <= set(rows)
    assert rows["effective_number"]["options"]["beta"] == 0.9999
    assert rows["dv"]["options"]["normalization"] == "expected"
    assert rows["pv"]["options"]["components"] == 10
    assert all(row["description"] and row["plugin"] for row in rows.values())


def test_cli_plugin_option_and_clean_error(tmp_path):
    path = write_plugin(tmp_path / "cli_plugin.py", name="cli_halved")
    out = subprocess.run([sys.executable, "-m", "lt_bench", "--plugin", str(path), "methods"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "cli_halved" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "lt_bench", "-p", "nowhere.py", "methods"],
                         capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip().startswith("lt-bench: error: plugin file") and "Traceback" not in bad.stderr


# -- one build path ------------------------------------------------------------------------------
ORDER_FREE = '''
import torch
import lt_bench

class Late(lt_bench.Method):
    """Weights from an attribute set after super().__init__() (a plugin author's natural order)."""

    def __init__(self, class_counts, *, power: float = 1.0, **options):
        super().__init__(class_counts, **options)
        self.power = power

    def raw_weights(self):
        return self.class_counts ** -self.power

@lt_bench.hookimpl
def lt_bench_register_methods(register):
    register("late", Late)
'''


def test_a_subclass_may_set_attributes_after_super_init(tmp_path):
    path = tmp_path / "late.py"
    path.write_text(ORDER_FREE)
    get_registry([str(path)])
    criterion = lt_bench.build_method("late", [4, 1], power=2.0, normalization="none")
    assert criterion.class_weights.tolist() == [1 / 16, 1.0]  # 4^-2 and 1^-2


@pytest.mark.parametrize("kind, name, args, option, hint", [
    ("methods", "dv", ([10, 5],), "substitue_below", "substitute_below"),
    ("losses", "focal", ([10, 5],), "gama", "gamma"),
    ("backbones", "vit_b_16", (10,), "image_sise", "image_size"),
    ("datasets", "cifar10_lt", (None,), "imbalanse", "imbalance"),
])
def test_every_kind_checks_its_options_with_a_suggestion(kind, name, args, option, hint):
    with pytest.raises(LtBenchError, match=rf"has no option '{option}' "
                                           rf"\(did you mean '{hint}'\?\)"):
        get_registry().build(kind, name, *args, **{option: 1})


def test_a_tracker_takes_no_options():
    with pytest.raises(LtBenchError, match="tracker 'local' has no option 'uri'; its options: none"):
        get_registry().build("trackers", "local", None, uri="x")


def test_the_plugin_contract_imports_nothing_of_the_builders():
    code = ("import sys, torch, lt_bench.method; lt_bench.method.Method([3, 4])(torch.zeros(2, 2), "
            "torch.tensor([0, 1])); "
            "print(sorted(m for m in ('lt_bench.api', 'lt_bench.registry') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_readme_plugin_example_works_as_written(tmp_path):
    readme = (__import__("pathlib").Path(__file__).parents[1] / "README.md").read_text()
    code = readme.split("# my_methods.py\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "my_methods.py"
    path.write_text(code)
    get_registry([str(path)])
    criterion = lt_bench.build_method("sqrt_volume", [4, 1], normalization="none")
    assert criterion.class_weights.tolist() == [0.5, 1.0]  # n^-0.5
    assert lt_bench.build_method("sqrt_volume", [4, 1], power=1.0,
                                 normalization="none").class_weights.tolist() == [0.25, 1.0]


def test_one_plugin_file_named_twice_loads_once(tmp_path):
    path = write_plugin(tmp_path / "twice.py", name="twice")
    registry = get_registry([str(path)])
    assert get_registry([str(path)]) is registry  # no "already registered" error
    assert registry.get("methods", "twice").plugin == str(path)


def test_a_methods_options_are_worked_out_once_for_a_run(tmp_path, monkeypatch):
    """The registry's answer on (method, loss) is computed once and read by the config's
    defaults, its checks, the run's check and the build (issue 38: it was worked out five times)."""
    import lt_bench.api as api
    from lt_bench.config import load_config
    from lt_bench.run.assemble import check_names

    api._spec.cache_clear()
    inspected = []
    real = api.factory_options
    monkeypatch.setattr(api, "factory_options", lambda f, *a: inspected.append(f) or real(f, *a))
    cfg = load_config([], ["dataset=synthetic_lt", "method=dv", "method.loss=focal",
                           "method.gamma=1.0", f"workspace={tmp_path}"])
    method = check_names(cfg)
    criterion = method.build([30, 10, 5])
    registry = get_registry()
    assert inspected == [registry.get("methods", "dv").factory,
                         registry.get("losses", "focal").factory]  # one look at each
    assert method.spec.loss == "focal" and "gamma" in method.spec.loss_options
    assert "gamma" not in method.spec.own and "loss=focal" in repr(criterion)

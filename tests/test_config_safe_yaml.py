"""Round 3 of bad input (issue 35): a study file is data, never code or a path out; the new
surface (studies, reproduce, anchors, the CPU variant cache) under a hostile user. Each case is
one line naming the file and key, and nothing is written or run where it must not be."""

from __future__ import annotations

import logging
import pickle
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from lt_bench import LtBenchError
from lt_bench.cli import main
from lt_bench.compare.study import load_study
from lt_bench.config import load_config
from lt_bench.method import Method

SHIPPED = Path(__file__).parents[1] / "configs" / "study" / "zheng_ng_table1_if100.yaml"


def study_file(tmp_path: Path, change) -> Path:
    raw = yaml.safe_load(SHIPPED.read_text())
    change(raw)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    return path


def report_only(study: Path | str, ws: Path, *extra: str) -> int:
    return main(["reproduce", str(study), "--report-only", f"workspace={ws}",
                 "tracking.tracker=local", *extra])


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    return err


# -- the worst: paths out, code run ---------------------------------------------------------
@pytest.mark.parametrize("name", ["../../evil", "/tmp/lt_bench_abs_evil", ".."])
def test_a_study_name_is_one_plain_name(tmp_path, capsys, name):
    path = study_file(tmp_path, lambda raw: raw.update(name=name))
    assert report_only(path, tmp_path / "a" / "b" / "ws") == 2
    assert "must be one plain name" in one_line(capsys)
    assert not list(tmp_path.rglob("*.png")) and not Path("/tmp/lt_bench_abs_evil.png").exists()


def evil_protocol(tmp_path: Path) -> tuple[Path, Path]:
    """A protocol file that loads a plugin, and the marker the plugin's import would write."""
    marker = tmp_path / "ran"
    plugin = tmp_path / "evil_plugin.py"
    plugin.write_text(f"open({str(marker)!r}, 'w').write('code ran')\n")
    proto = tmp_path / "evilproto.yaml"
    proto.write_text(f"plugins: [{plugin}]\nprotocol: {{epochs: 1}}\n")
    return proto, marker


def test_a_study_never_reaches_a_file_by_dots_nor_runs_its_plugins(tmp_path, capsys):
    proto, marker = evil_protocol(tmp_path)
    dots = "../" * 12 + str(proto.with_suffix(""))[1:]
    path = study_file(tmp_path, lambda raw: raw.update(protocol=dots))
    assert report_only(path, tmp_path / "ws") == 2
    assert "is not a name" in one_line(capsys) and not marker.exists()
    with pytest.raises(LtBenchError, match="is not a name"):  # typed, the same
        load_config([], [f"protocol={dots}"])
    assert not marker.exists()


def test_a_group_file_may_not_load_plugins(tmp_path, monkeypatch):
    proto, marker = evil_protocol(tmp_path)
    (tmp_path / "protocol").mkdir()
    proto.rename(tmp_path / "protocol" / "evil.yaml")
    monkeypatch.setattr("lt_bench.config.config_dir", lambda: tmp_path)
    with pytest.raises(LtBenchError, match="may not load plugins"):
        load_config([], ["protocol=evil"])
    assert not marker.exists()


@pytest.mark.parametrize("plant", ["folder", "file"])
def test_study_outputs_never_go_through_a_planted_link(tmp_path, capsys, plant):
    ws, outside = tmp_path / "ws", tmp_path / "outside"
    outside.mkdir()
    folder = ws / "studies" / "zheng_ng_table1_if100"
    if plant == "folder":
        folder.parent.mkdir(parents=True)
        folder.symlink_to(outside)
    else:
        folder.mkdir(parents=True)
        (outside / "x.png").write_text("keep")
        (folder / "zheng_ng_table1_if100.png").symlink_to(outside / "x.png")
    assert report_only("zheng_ng_table1_if100", ws) == 2
    assert "symbolic link" in capsys.readouterr().err
    assert [p.name for p in outside.iterdir()] == ([] if plant == "folder" else ["x.png"])
    assert plant == "folder" or (outside / "x.png").read_text() == "keep"


PLUGIN_DATA = '''
import torch
import lt_bench
from lt_bench.data import TensorData

def made(cfg, *, imbalance=None, test=(2, 2, 2)):
    labels = torch.tensor([0] * 6 + [1] * 3 + [2] * 2)
    test_labels = torch.tensor([c for c, n in enumerate(test) for _ in range(n)],
                               dtype=torch.long)
    images = torch.zeros(len(labels), 3, 4, 4, dtype=torch.uint8)
    return TensorData("made", ["a", "b", "c"], images, labels,
                      torch.zeros(len(test_labels), 3, 4, 4, dtype=torch.uint8), test_labels,
                      mean=[0.5] * 3, std=[0.25] * 3)

@lt_bench.hookimpl
def lt_bench_register_datasets(register):
    register("no_test", lambda cfg, *, imbalance=None: made(cfg, test=()))
    register("no_cat_test", lambda cfg, *, imbalance=None: made(cfg, test=(2, 2)))
'''


def test_a_plugin_data_set_gets_the_split_checks(tmp_path, caplog, monkeypatch):
    from lt_bench.data import load_data
    from lt_bench.registry import reset_registry

    plugin = tmp_path / "made_data.py"
    plugin.write_text(PLUGIN_DATA)
    monkeypatch.setenv("LT_BENCH_PLUGINS", str(plugin))
    reset_registry()
    with pytest.raises(LtBenchError, match="test split of data set 'no_test' holds no images"):
        load_data("no_test", None, {"root": str(tmp_path)})
    with caplog.at_level(logging.WARNING, logger="lt_bench"):
        load_data("no_cat_test", None, {"root": str(tmp_path)})
    assert "1 class(es) have no test images" in caplog.text and ": c;" in caplog.text
    monkeypatch.delenv("LT_BENCH_PLUGINS")
    reset_registry()


BOMB = textwrap.dedent("""\
    a: &a [x, x, x, x, x, x, x, x, x]
    b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
    c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
    d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
    e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
    f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
    g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
    h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
    i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
    """)


@pytest.mark.parametrize("under", ["", "method"])
def test_a_yaml_bomb_is_refused_not_expanded(tmp_path, under):
    text = BOMB if not under else f"{under}:\n" + textwrap.indent(BOMB, "  ")
    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    with pytest.raises(LtBenchError, match="billion laughs"):
        load_config([str(path)], [])


# -- bad: one line naming the file and the key -----------------------------------------------
def _set(path: str, value):
    def change(raw):
        node = raw
        *parents, leaf = path.split("/")
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        node[leaf] = value
    return change


@pytest.mark.parametrize("change, said", [
    (_set("columns/0/imbalance", "abc"), "'imbalance' must be a number"),
    (_set("columns", [5]), "each of 'columns' must be a mapping"),
    (_set("rows", [5, 6]), "each of 'rows' must be a mapping"),
    (_set("rows/0/options", "x"), "'options' must be a mapping"),
    (_set("setup", [1, 2]), "'setup' must be a mapping"),
    (_set("setup/seeds", 30), "setup 'seeds' must be a mapping"),
    (_set("paper_seeds", "x"), "paper_seeds='x'"),
    (_set("paper_seeds", 1), "paper_seeds=1"),
    (_set("claims", "x"), "'claims' must be a list"),
    (_set("claims", ["x"]), "each claim must be a mapping"),
    (_set("claims/0/columns", 5), "a claim's columns must be 'all' or a list"),
])
def test_a_study_of_the_wrong_type_is_one_line(tmp_path, change, said):
    with pytest.raises(LtBenchError) as info:
        load_study(str(study_file(tmp_path, change)))
    assert said in str(info.value) and "\n" not in str(info.value)
    assert str(tmp_path / "study.yaml") in str(info.value)


@pytest.mark.parametrize("change, said", [
    (_set("rows/0/method", "cee"), "row 'CE': unknown method 'cee' (did you mean 'ce'?)"),
    (_set("columns/0/dataset", "cifar11_lt"), "column 'CIFAR-10 IF 100': unknown dataset 'cifar11_lt'"),
])
def test_an_unknown_method_or_data_set_in_a_study_is_named(tmp_path, capsys, change, said):
    assert report_only(study_file(tmp_path, change), tmp_path / "ws") == 2
    assert said in one_line(capsys)


def test_anchors_files_of_the_wrong_kind_are_one_line(tmp_path):
    from lt_bench.backbones.vl_ltr_anchors import load_anchors, save_anchors

    pickled = tmp_path / "pickled.pt"
    pickled.write_bytes(pickle.dumps({"anchors": np.zeros((2, 1, 3)), "f": print}))
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a torch file")
    for path in (pickled, garbage):
        with pytest.raises(LtBenchError) as info:
            load_anchors(path)
        assert "weights_only" not in str(info.value) and "\n" not in str(info.value)
    for names, said in ((5, "class_names must be a list"), ("class0", "class_names must be")):
        bad = tmp_path / "names.pt"
        torch.save({"anchors": torch.ones(2, 1, 3), "class_names": names}, bad)
        with pytest.raises(LtBenchError, match=said):
            load_anchors(bad, class_names=["a", "b"])
    target = tmp_path / "keep.txt"
    target.write_text("keep")
    (tmp_path / "out.pt").symlink_to(target)
    with pytest.raises(LtBenchError, match="symbolic link"):
        save_anchors(tmp_path / "out.pt", torch.ones(2, 1, 3), torch.ones(2), ["a", "b"])
    assert target.read_text() == "keep"


def test_names_typed_for_other_classes_are_named_as_such():
    from types import SimpleNamespace

    from lt_bench.commands.anchors import choose_sentences

    args = SimpleNamespace(sentences=None, names="a,b", template=None)
    with pytest.raises(LtBenchError) as info:
        choose_sentences(args, ["cat", "dog", "ship"])
    assert "--names names 2 classes, the data set has 3" in str(info.value)
    assert "anchors file" not in str(info.value)


@pytest.mark.parametrize("entry", ["a string", {"channels_last": "false", "compile": False},
                                   {"channels_last": True, "compile": False, "figures": 5},
                                   {"channels_last": True, "compile": False,
                                    "figures": {"x": {"eval_img_s": 1.0}}}])
def test_a_cpu_variant_cache_entry_lt_bench_did_not_write_is_measured_again(entry, caplog):
    from lt_bench.device.cpu_variant import cached_choice

    with caplog.at_level(logging.WARNING, logger="lt_bench"):
        assert cached_choice(entry, Path("cache.json")) is None
    assert "measuring again" in caplog.text
    good = {"channels_last": True, "compile": False, "why": "w",
            "figures": {"channels_last": {"train_img_s": 1.0, "dropped": True}}}
    assert cached_choice(good, Path("c")).channels_last is True


@pytest.mark.parametrize("text, said", [
    (b"protocol: {epochs: 3}\nname: \xff\xfe\n", "is not UTF-8 text"),
    (("x: " + "[" * 200 + "]" * 200).encode(), "nests deeper than"),
    (b"data: {root: '${${data.profile}}'}\n", "builds a key's name"),
    (b"data: {root: env, cache_dir: '${oc.${data.root}:HOME}'}\n", "calls a resolver"),
    (b"data: {root: '${no.such.key}'}\n", "Interpolation key 'no.such.key' not found"),
])
def test_a_bad_config_file_is_one_line(tmp_path, text, said):
    path = tmp_path / "c.yaml"
    path.write_bytes(text)
    with pytest.raises(LtBenchError) as info:
        load_config([str(path)], [])
    assert said in str(info.value) and "\n" not in str(info.value)


def test_a_huge_config_is_refused_unread(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_bytes(b"a: [" + b"1, " * (2 * 2**20) + b"1]\n")
    with pytest.raises(LtBenchError, match="MiB, over the"):
        load_config([str(path)], [])


def test_a_comment_in_a_typed_value_is_refused_not_dropped():
    with pytest.raises(LtBenchError, match="quote it"):
        load_config([], ["workspace=/tmp/ws #x"])
    assert load_config([], ["workspace=/tmp/ws#x"]).workspace == "/tmp/ws#x"


def test_the_sqlite_uri_keeps_odd_names_and_a_bad_path_fails_at_once(tmp_path):
    from lt_bench.tracking.store import check_sqlite, sqlite_path, sqlite_uri

    for name in ("a%20b", "a?b", "a#b", "a b"):
        db = tmp_path / name / "mlflow.db"
        assert sqlite_path(sqlite_uri(db)) == db
        check_sqlite(sqlite_uri(db))
        assert db.is_file()
    with pytest.raises(LtBenchError, match="cannot open the MLflow store"):
        check_sqlite(sqlite_uri(tmp_path / ("d" * 300) / "mlflow.db"))


def test_raw_weights_may_be_an_array_like_or_is_refused_in_one_line():
    class FromNumpy(Method):
        def raw_weights(self):
            return np.array([1.0, 3.0])

    method = FromNumpy([3, 1])
    method.end_epoch()
    assert method.class_weights.tolist() == pytest.approx([0.5, 1.5])  # the mean weight is 1

    class Wrong(Method):
        def raw_weights(self):
            return [1.0, 2.0, 3.0]

    with pytest.raises(LtBenchError, match=r"gave shape \(3,\), not \(2,\)"):
        Wrong([3, 1])


def test_an_interrupt_wrapped_by_class_creation_is_an_interrupt(monkeypatch, capsys):
    """SIGTERM at start-up, raised as KeyboardInterrupt inside a class body's __set_name__,
    reaches the command as a RuntimeError: it is still an interruption (exit 130, one line)."""
    from functools import cached_property

    def define_a_class(args):
        class Interrupted:
            def __set_name__(self, owner, name):
                raise KeyboardInterrupt

        class Library:
            value = cached_property(lambda self: 1)
            sneaky = Interrupted()

    monkeypatch.setattr("lt_bench.commands.methods.run", define_a_class)
    assert main(["methods"]) == 130
    assert one_line(capsys) == "lt-bench: interrupted"


def test_a_silent_store_at_start_up_is_given_up_within_the_timeout_of_the_command():
    """Imports take seconds before the first store call: that call gets what is left of
    tracking.timeout_s (at least 1 s), so the command fails within it; later calls get all."""
    import lt_bench
    from lt_bench.tracking.http_budget import left_of

    start = lt_bench.STARTED
    assert left_of(30.0, now=start + 6.0) == pytest.approx(24.0)
    assert left_of(30.0, now=start + 29.5) == 1.0
    assert left_of(30.0, now=start + 600.0) == 30.0  # a call late in a run

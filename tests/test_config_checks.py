"""Issue 27, silently wrong configs and data: a method option is never dropped without a word, the
schedule is checked in one place, a sweep grid holds each run once, raw weights of a plugin are
checked, a test split without images is refused, file lists keep absolute paths, and a config
cannot read the environment."""

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from lt_bench import LtBenchError
from lt_bench.config import config_hash, load_config
from lt_bench.config.checks import schedule_warnings
from lt_bench.data import DataConfig, load_data
from lt_bench.method import Method
from lt_bench.sweep.grid import expand


# -- one order of precedence for method options ------------------------------------------------
def test_a_method_option_typed_before_the_method_applies_to_it():
    cfg = load_config([], ["method.beta=0.5", "method=effective_number"])
    assert dict(cfg.method) == {"name": "effective_number", "beta": 0.5}


def test_a_method_option_dropped_by_a_later_method_is_said(caplog):
    notes = []
    cfg = load_config([], ["method=effective_number", "method.beta=0.99", "method=dv"], notes)
    assert dict(cfg.method) == {"name": "dv"}
    assert len(notes) == 1 and "method.beta=0.99" in notes[0] and "dv" in notes[0]
    with caplog.at_level(logging.WARNING, logger="lt_bench"):  # the CLI prints these
        load_config([], ["method=effective_number", "method.beta=0.99", "method=dv"])
    assert [r.getMessage() for r in caplog.records] == notes


def test_options_written_with_a_method_belong_to_it(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("method:\n  name: dv\n  convention: authors\n")
    assert load_config([str(path)], ["method=dv"]).method.convention == "authors"
    notes = []
    cfg = load_config([str(path)], ["method.loss=focal", "method=ce"], notes)
    assert dict(cfg.method) == {"name": "ce", "loss": "focal"}  # typed alone: it stays
    assert len(notes) == 1 and "method.convention=authors" in notes[0] and "mine.yaml" in notes[0]


def test_a_sweeps_method_option_goes_to_the_methods_that_take_it():
    lines = []
    sweep = expand(["methods=[effective_number,ce]", "method.beta=0.5"], out=lines.append)
    by_method = {job.method: job for job in sweep.jobs}
    assert by_method["effective_number"].cfg.method.beta == 0.5
    assert "beta" not in by_method["ce"].cfg.method
    assert not any("beta" in o for o in by_method["ce"].overrides)  # its worker says nothing
    plain = expand(["methods=[effective_number]"], out=[].append).jobs[0]
    assert by_method["effective_number"].cfg_hash != plain.cfg_hash
    for job in sweep.jobs:  # what a worker loads is what was planned
        assert config_hash(load_config([], job.overrides)) == job.cfg_hash
    assert lines == ["sweep: method.beta=0.5 applies to effective_number; ce has no option 'beta'"]


def test_a_sweeps_method_option_that_no_method_takes_is_refused():
    with pytest.raises(LtBenchError, match=r"method.bta=0.5: no method.*'bta'.*did you mean 'beta'"):
        expand(["methods=[ce,effective_number]", "method.bta=0.5"], out=[].append)


# -- the protocol's schedule --------------------------------------------------------------------
@pytest.mark.parametrize("override, match", [
    ("protocol.milestones=[5,1]", r"'protocol.milestones' must be increasing.*\[1, 5\]"),
    ("protocol.milestones=[2,2]", "'protocol.milestones' must be increasing"),
    ("protocol.milestones=[-1]", "'protocol.milestones' must be epochs >= 0"),
    ("protocol.batch_size=1", "'protocol.batch_size' must be >= 2.*BatchNorm"),
])
def test_a_schedule_no_run_can_follow_is_refused(override, match):
    with pytest.raises(LtBenchError, match=match):
        load_config([], [override])


def test_a_schedule_that_never_happens_is_said():
    short = load_config([], ["protocol=paper_cifar", "protocol.epochs=1", "method=dv"])
    warnings = schedule_warnings(short)
    assert len(warnings) == 2
    assert "protocol.milestones [159, 179]" in warnings[0] and "never" in warnings[0]
    assert "protocol.start_epoch=160 >= protocol.epochs=1" in warnings[1]
    late = load_config([], ["method=dv", "protocol.start_epoch=10", "protocol.epochs=2",
                            "protocol.milestones=[1]"])
    assert schedule_warnings(late) == [
        "protocol.start_epoch=10 >= protocol.epochs=2: no epoch is re-weighted, dv trains with "
        "uniform class weights throughout"]
    assert schedule_warnings(load_config([], ["protocol=quick", "method=dv"])) == []
    # plain cross-entropy has no weights to miss
    assert schedule_warnings(load_config([], ["method=ce", "protocol.start_epoch=10",
                                              "protocol.epochs=2", "protocol.milestones=[1]"])) == []


def test_a_sweep_says_each_schedule_warning_once():
    lines = []
    expand(["methods=[dv,effective_number]", "seeds=2", "protocol=paper_cifar",
            "protocol.epochs=1"], out=lines.append)
    assert sum("protocol.milestones [159, 179]" in line for line in lines) == 1
    assert sum("protocol.start_epoch=160" in line for line in lines) == 2  # one per method


# -- one run per run folder in a sweep ----------------------------------------------------------
def test_a_sweep_drops_duplicate_runs_and_says_so():
    lines = []
    sweep = expand(["methods=[ce,ce]", "seeds=[0,0,1]"], out=lines.append)
    assert [(j.method, j.seed) for j in sweep.jobs] == [("ce", 0), ("ce", 1)]
    assert lines == ["sweep: dropped 4 duplicate run(s): ce seed=0 (x3), ce seed=1 (the same "
                     "method, config and seed as a run before)"]


# -- raw weights of a plugin --------------------------------------------------------------------
class FixedWeights(Method):
    def __init__(self, class_counts, *, raw=(-1.0, -2.0), **options):
        self.raw = raw
        super().__init__(class_counts, **options)

    def raw_weights(self):
        return torch.tensor(self.raw, dtype=torch.float64)


@pytest.mark.parametrize("raw, normalization", [
    ((-1.0, -2.0), "mean"), ((-1.0, -2.0), "expected"), ((-1.0, 3.0), "none"),
    ((0.0, 0.0), "none"),
])
def test_negative_or_zero_raw_weights_are_a_bug_of_the_method(raw, normalization):
    with pytest.raises(LtBenchError, match=r"FixedWeights: raw_weights\(\) gave .*bug in the "
                                           r"method's raw_weights\(\)"):
        FixedWeights([10, 1], raw=raw, normalization=normalization)
    assert FixedWeights([10, 1], raw=(0.0, 2.0)).class_weights.tolist() == [0.0, 2.0]


# -- the test split of an image folder ----------------------------------------------------------
def write_folder(root, test_classes=("ant", "bee", "cat"), test_images=2):
    for split, classes, n in (("train", ("ant", "bee", "cat"), 4), ("test", test_classes,
                                                                   test_images)):
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = np.random.default_rng(100 * c + i).integers(0, 256, (8, 8, 3), np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def data_cfg(root, tmp_path, **more):
    return DataConfig(root=str(root), cache_dir=str(tmp_path / "cache"), progress=False,
                      workers=0, **more)


@pytest.mark.parametrize("pipeline", ["tensor", "loader"])
def test_a_test_split_without_images_is_refused(tmp_path, pipeline):
    root = write_folder(tmp_path / "f", test_images=0)
    with pytest.raises(LtBenchError, match=r"test split .*f/test holds no images"):
        load_data("image_folder_lt", None, data_cfg(root, tmp_path, pipeline=pipeline))


def test_classes_without_test_images_are_named(tmp_path, caplog):
    root = write_folder(tmp_path / "f", test_classes=("ant", "bee"))
    with caplog.at_level(logging.WARNING, logger="lt_bench"):
        data = load_data("image_folder_lt", None, data_cfg(root, tmp_path))
    assert data.test_counts == [2, 2, 0]
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "1 class(es) have no test images" in said[0] and ": cat;" in said[0]


# -- file lists with absolute paths -------------------------------------------------------------
def test_a_file_list_keeps_absolute_paths(tmp_path):
    images = tmp_path / "elsewhere"
    rows = {"train": [], "test": []}
    for split, per in (("train", [3, 2, 1]), ("test", [1, 1, 1])):
        for label, n in enumerate(per):
            folder = images / split / f"n0{label}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = np.random.default_rng(10 * label + i).integers(0, 256, (8, 8, 3),
                                                                        np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
                rows[split].append(f"{folder / f'{i}.png'} {label}")  # absolute
    root = tmp_path / "root"
    root.mkdir()
    for split, lines in rows.items():
        (root / f"ImageNet_LT_{split}.txt").write_text("\n".join(lines) + "\n")
    data = load_data("imagenet_lt", None, data_cfg(root, tmp_path, num_classes=3,
                                                   pipeline="tensor"))
    assert data.train_counts == [3, 2, 1] and data.test_counts == [1, 1, 1]


# -- what a config may interpolate --------------------------------------------------------------
@pytest.mark.parametrize("text", ["workspace: ${oc.env:HOME}/ws\n",
                                  "tracking:\n  uri: ${oc.decode:'\"x\"'}\n",
                                  "plugins: ['${ oc.env:PLUGIN }']\n"])
def test_a_config_file_cannot_read_the_environment(tmp_path, text):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(LtBenchError, match=r"config key '[\w.\[\]0-9]+' in .*run.yaml: .*resolver"):
        load_config([str(path)], [])


def test_a_config_may_refer_to_its_own_keys(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("protocol:\n  epochs: 3\n  eval_every: ${protocol.epochs}\n")
    assert load_config([str(path)], []).protocol.eval_every == 3
    with pytest.raises(LtBenchError, match=r"config key 'workspace' in override.*resolver"):
        load_config([], ["workspace=${oc.env:HOME}"])

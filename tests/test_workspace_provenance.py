"""Provenance: the data fingerprint against data whose sameness is known by construction (one
CIFAR written as torchvision's pickles, as lossless PNGs and as JPEGs), the record in
results.json and the trackers' tags, and the leaderboard's refusal to pool runs on different
data."""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import shutil
import subprocess

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from scipy import stats
from test_tracking import DATA_INFO, fake_results, make_cfg

from lt_bench.compare.leaderboard import build, format_text
from lt_bench.data import DataConfig, LoaderData, TensorData, load_data
from lt_bench.data import pipeline as pipeline_module
from lt_bench.tracking import Tracker
from lt_bench.tracking.mlflow_tracker import MlflowTracker
from lt_bench.tracking.records import from_tags, tags_of
from lt_bench.workspace import provenance
from lt_bench.workspace.provenance import (
    UNKNOWN,
    data_fingerprint,
    fingerprint_groups,
    gather,
    lt_bench_commit,
    pooling_warning,
    split_warning,
)
from lt_bench.workspace.record import RunResult

CLASSES, PER_CLASS, TEST_PER_CLASS = 4, 12, 2
PARTS = ("data_indices_sha", "data_counts_sha", "data_pixels_sha")


# -- data whose sameness is known ---------------------------------------------------------------
def cifar_images(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Smooth 32×32 images (JPEG keeps them close, not equal), labels sorted by class."""
    rng = np.random.default_rng(seed)
    n = CLASSES * PER_CLASS
    base = rng.integers(0, 256, (n, 3, 4, 4)).astype(np.float64)
    images = np.kron(base, np.ones((1, 1, 8, 8))).astype(np.uint8)  # 8×8 flat blocks
    return images, np.repeat(np.arange(CLASSES), PER_CLASS)


def write_pickled(root, images, labels):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i, part in enumerate(np.array_split(np.arange(len(labels)), 5), 1):
        batch = {"data": images[part].reshape(len(part), -1), "labels": labels[part].tolist()}
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch))
    test = np.repeat(np.arange(CLASSES), TEST_PER_CLASS)
    (folder / "test_batch").write_bytes(pickle.dumps(
        {"data": images[:len(test)].reshape(len(test), -1), "labels": test.tolist()}))
    (folder / "batches.meta").write_bytes(pickle.dumps(
        {"label_names": [f"c{c}" for c in range(CLASSES)]}))


def write_exported(root, images, labels, ext: str):
    """The same images as an image folder (class folders, files in the pickles' order)."""
    folder = root / "cifar10-jpeg"
    for split, idx in (("train", range(len(labels))),
                       ("test", [c * PER_CLASS + i for c in range(CLASSES)
                                 for i in range(TEST_PER_CLASS)])):
        for i in idx:
            d = folder / split / f"c{labels[i]}"
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i].transpose(1, 2, 0)).save(d / f"{i:05d}.{ext}", quality=90)


def load(root, cache, **kw) -> TensorData:
    return load_data("cifar10_lt", 4, DataConfig(root=str(root), cache_dir=str(cache),
                                                  progress=False, **kw))


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    images, labels = cifar_images()
    roots = {}
    for kind in ("pickle", "png", "jpg"):
        roots[kind] = tmp_path_factory.mktemp(kind)
        if kind == "pickle":
            write_pickled(roots[kind], images, labels)
        else:
            write_exported(roots[kind], images, labels, kind)
    return roots, tmp_path_factory.mktemp("cache")


def test_one_cifar_as_pickles_and_as_pngs_has_one_fingerprint_and_as_jpegs_another(sources):
    roots, cache = sources
    pickled, png, jpg = (data_fingerprint(load(roots[k], cache)) for k in ("pickle", "png", "jpg"))
    assert pickled == data_fingerprint(load(roots["pickle"], cache))  # the same data twice
    # PNG is lossless: the same pixels by another route are the same data
    assert {k: png[k] for k in PARTS} == {k: pickled[k] for k in PARTS}
    assert png["data_fingerprint"] == pickled["data_fingerprint"]
    # JPEG is not: equal indices and counts, other pixels, another fingerprint
    assert jpg["data_indices_sha"] == pickled["data_indices_sha"]
    assert jpg["data_counts_sha"] == pickled["data_counts_sha"]
    assert jpg["data_pixels_sha"] != pickled["data_pixels_sha"]
    assert jpg["data_fingerprint"] != pickled["data_fingerprint"]
    assert pickled["data_pixels_digested"] == "all 26 training images"  # 12 + 7 + 4 + 3 at IF 4


def test_another_subset_changes_the_indices_not_the_counts(sources):
    roots, cache = sources
    one = data_fingerprint(load(roots["pickle"], cache))
    other = data_fingerprint(load(roots["pickle"], cache, subset_seed=1))
    assert other["data_counts_sha"] == one["data_counts_sha"]
    assert other["data_indices_sha"] != one["data_indices_sha"]
    assert other["data_fingerprint"] != one["data_fingerprint"]


def toy(pixels_seed: int = 0, counts=(6, 3, 2)) -> TensorData:
    labels = torch.arange(len(counts)).repeat_interleave(torch.tensor(counts))
    gen = torch.Generator().manual_seed(pixels_seed)
    images = torch.randint(0, 256, (len(labels), 3, 8, 8), generator=gen, dtype=torch.uint8)
    data = TensorData("toy", ["a", "b", "c"], images, labels, images[:3], labels[:3],
                      mean=[0.5] * 3, std=[0.25] * 3)
    data.source_indices = torch.arange(len(labels)) * 2
    return data


def test_one_pixel_changes_only_the_pixels_part_and_the_digest_is_of_the_bytes():
    data, changed = toy(), toy()
    changed.train_images[-1, 2, 7, 7] ^= 1  # the last byte of the last image
    a, b = data_fingerprint(data), data_fingerprint(changed)
    assert [k for k in PARTS if a[k] != b[k]] == ["data_pixels_sha"]
    # independent of lt_bench's helper: sha256 of the header and the raw bytes, as documented
    raw = data.train_images.numpy().tobytes()
    expected = hashlib.sha256(b"torch.uint8(11, 3, 8, 8);" + raw).hexdigest()
    assert data.pixel_digest() == (expected, "all 11 training images")
    assert a["data_pixels_sha"] == expected[:12]


def test_in_memory_images_over_the_byte_limit_are_sampled_every_kth(monkeypatch):
    data = toy()  # 11 images of 192 bytes
    monkeypatch.setattr(pipeline_module, "DIGEST_BYTES", 192 * 4)
    sha, note = data.pixel_digest()
    assert note == "4 of 11 training images (every 3rd from the first)"
    outside = toy()
    outside.train_images[1] ^= 255  # image 1 is not in the sample 0, 3, 6, 9
    assert outside.pixel_digest()[0] == sha
    inside = toy()
    inside.train_images[9, 0, 0, 0] ^= 1
    assert inside.pixel_digest()[0] != sha


def test_decoded_data_digests_a_fixed_sample_of_its_files(tmp_path, monkeypatch):
    paths = []
    for i in range(7):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(np.full((5, 6, 3), 10 * i, np.uint8)).save(paths[-1])
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2])
    monkeypatch.setattr(pipeline_module, "DIGEST_DECODED", 3)

    def data():
        return LoaderData("files", ["a", "b", "c"], paths, labels, paths[:3], labels[:3],
                          workers=0)

    sha, note = data().pixel_digest()
    assert note == "3 of 7 training images (every 3rd from the first)"  # images 0, 3, 6
    decoded = b"".join(b"torch.uint8(3, 5, 6);" + np.full((3, 5, 6), 10 * i, np.uint8).tobytes()
                       for i in (0, 3, 6))
    assert sha == hashlib.sha256(decoded).hexdigest()
    Image.fromarray(np.full((5, 6, 3), 99, np.uint8)).save(paths[1])  # not in the sample
    assert data().pixel_digest()[0] == sha
    Image.fromarray(np.full((5, 6, 3), 99, np.uint8)).save(paths[3])
    assert data().pixel_digest()[0] != sha


def test_a_data_set_without_indices_or_pixels_still_has_a_fingerprint():
    class Bare:
        classes, train_counts, train_labels = ["a"], [2], torch.tensor([0, 0])

    parts = data_fingerprint(Bare())
    assert parts["data_pixels_sha"] == UNKNOWN and parts["data_fingerprint"]
    assert parts["data_pixels_digested"].startswith("no pixels")

    class Broken(Bare):
        def pixel_digest(self):
            raise OSError("a file went away\nmore")

    broken = data_fingerprint(Broken())  # the end of a finished run: said, never raised
    assert broken["data_pixels_digested"] == "no pixels: OSError: a file went away"
    assert broken["data_fingerprint"] == parts["data_fingerprint"]


# -- the record -------------------------------------------------------------------------------
def test_gather_records_versions_device_batch_and_selection():
    record = gather(toy(), torch.device("cpu"), world_size=4, batch_size=32,
                    best_chosen_on="val")
    assert record["effective_batch_size"] == 128 and record["world_size"] == 4
    assert record["selection"] == {"final": "last epoch", "best": "best epoch on val"}
    assert record["torch_version"] == torch.__version__
    assert record["device"] == "cpu" and record["device_name"]
    assert record["python_version"].count(".") == 2
    assert set(provenance.SCALAR_KEYS) <= set(record)


def test_the_commit_of_a_checkout_and_none_outside_one(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("no git")
    assert lt_bench_commit(tmp_path) is None  # not a checkout
    pkg = tmp_path / "repo" / "pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("x = 1\n")

    def git(*args):
        return subprocess.run(["git", "-C", str(tmp_path / "repo"), *args], check=True,
                              capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    assert lt_bench_commit(pkg) == git("rev-parse", "HEAD")
    (pkg / "__init__.py").write_text("x = 2\n")
    assert lt_bench_commit(pkg) == git("rev-parse", "HEAD") + "-dirty"
    untracked = tmp_path / "repo" / "installed"
    untracked.mkdir()
    (untracked / "__init__.py").write_text("")
    assert lt_bench_commit(untracked) is None  # inside a checkout, but not part of it


def test_results_json_keeps_provenance_and_reads_older_files():
    cfg = make_cfg("/ws")
    result = fake_results(cfg, 0.5)
    assert result.provenance == {}  # a file from before provenance was kept
    result.provenance = gather(toy(), "cpu", 1, 64, "test")
    again = RunResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert again.provenance == result.provenance


def provenanced(cfg: dict, acc: float, data: TensorData) -> RunResult:
    result = fake_results(cfg, acc)
    result.provenance = gather(data, "cpu", 1, 64, result.best_chosen_on)
    return result


def test_both_trackers_give_the_fingerprint_as_a_tag(tmp_path, template_db):
    ws = tmp_path / "ws"
    ws.mkdir()
    shutil.copy(template_db, ws / "mlflow.db")
    cfg = make_cfg(ws, "dv", 0)
    result = provenanced(cfg, 0.6, toy())
    tracker = MlflowTracker(OmegaConf.create(cfg))
    tracker.start(cfg, ws / "runs" / "x", DATA_INFO)
    tracker.finish(result)
    folder = ws / "runs" / "run-seed0"
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(result.to_dict()))
    read = OmegaConf.create(make_cfg(ws))
    [from_mlflow] = MlflowTracker(read).runs_for_leaderboard()
    [from_folder] = Tracker(read).runs_for_leaderboard()
    assert from_tags(from_mlflow["tags"]) == from_tags(from_folder["tags"]) == {
        k: result.provenance[k] for k in provenance.DATA_KEYS}
    stored = tracker.client.get_run(tracker.run_id).data.tags
    assert stored["lt.selection.best"] == "best epoch on test"
    assert stored["lt.effective_batch_size"] == "64"
    assert {k: v for k, v in stored.items() if k in tags_of(result.provenance)} == \
        tags_of(result.provenance)


# -- the rule: never pooled -------------------------------------------------------------------
def run(method: str, seed: int, acc: float, data: dict | None) -> dict:
    tags = {"lt.method": method, "lt.seed": str(seed), "lt.dataset": "cifar10_lt",
            "lt.imbalance": "100", "lt.backbone": "resnet32", "lt.protocol": "quick",
            "lt.cfg_hash": f"h{method}",
            **{f"lt.{k}": v for k, v in (data or {}).items() if k in provenance.DATA_KEYS}}
    return {"run_id": f"{method}{seed}{acc}", "end_time": seed, "tags": tags,
            "metrics": {"final/acc": acc}}


PICKLE = data_fingerprint(toy(0))
JPEG = data_fingerprint(toy(1))  # same indices and counts, other pixels


def test_runs_on_two_data_sets_are_two_rows_and_one_line_naming_both():
    dv_a, dv_b, ce_a = [0.70, 0.72, 0.74], [0.50, 0.52], [0.60, 0.61]
    runs = ([run("dv", s, v, PICKLE) for s, v in enumerate(dv_a)]
            + [run("dv", s, v, JPEG) for s, v in enumerate(dv_b)]
            + [run("ce", s, v, PICKLE) for s, v in enumerate(ce_a)])
    said = []
    rows = build(runs, warn=said.append)
    dv = {r.data: r for r in rows if r.method == "dv"}
    a, b = PICKLE["data_fingerprint"], JPEG["data_fingerprint"]
    assert set(dv) == {a, b}
    assert dv[a].n == 3 and dv[a].mean == pytest.approx(np.mean(dv_a))
    assert dv[b].n == 2 and dv[b].mean == pytest.approx(np.mean(dv_b))
    # compared with the baseline on the same data only
    assert dv[a].p_value == pytest.approx(stats.ttest_ind(dv_a, ce_a, equal_var=False).pvalue)
    assert dv[b].p_value is None and dv[b].diff is None and b in dv[b].test_note
    assert said == [f"leaderboard: cifar10_lt IF 100 resnet32 quick dv@hdv: 3 runs on data {a}, "
                    f"2 runs on data {b} (pixels differ): not pooled"]
    table = format_text(rows)
    assert "data" in table.splitlines()[1] and a in table and b in table


def test_runs_without_a_fingerprint_are_unknown_and_kept_apart_said():
    said = []
    rows = build([run("ce", 0, 0.6, None), run("ce", 1, 0.62, None),
                  run("ce", 2, 0.7, PICKLE)], warn=said.append)
    assert sorted((r.data, r.n) for r in rows) == sorted(
        [(UNKNOWN, 2), (PICKLE["data_fingerprint"], 1)])
    assert len(said) == 1 and UNKNOWN in said[0] and PICKLE["data_fingerprint"] in said[0]
    assert "recorded a fingerprint" in said[0] and said[0].endswith("not pooled")


def test_one_data_set_is_silent_and_logged_by_default(caplog):
    with caplog.at_level(logging.WARNING):
        rows = build([run("ce", s, 0.6 + s / 100, PICKLE) for s in range(3)])
        assert len(rows) == 1 and rows[0].n == 3 and not caplog.records
        build([run("ce", 0, 0.6, PICKLE), run("ce", 1, 0.6, JPEG)])
    assert [r.getMessage().endswith("not pooled") for r in caplog.records] == [True]
    assert "data" not in format_text(rows).splitlines()[1].split()


def result_on(data: dict, seed: int) -> RunResult:
    result = fake_results(make_cfg("/ws", "dv", seed), 0.5)
    result.provenance = dict(data)
    return result


def test_the_rule_on_run_results_for_the_study():
    results = [result_on(PICKLE, 0), result_on(JPEG, 1), result_on(PICKLE, 2), result_on({}, 3)]
    groups = fingerprint_groups(results)
    assert list(groups) == [PICKLE["data_fingerprint"], JPEG["data_fingerprint"], UNKNOWN]
    assert [r.seed for r in groups[PICKLE["data_fingerprint"]]] == [0, 2]
    line = pooling_warning("reproduce: table 1 dv", results)
    assert line.startswith(f"reproduce: table 1 dv: 2 runs on data {PICKLE['data_fingerprint']}")
    assert "pixels differ" in line and UNKNOWN in line
    assert pooling_warning("x", results[::2][:1] + [result_on(PICKLE, 4)]) is None
    assert split_warning("x", {"a": [{"data_counts_sha": "1", "data_indices_sha": "i",
                                      "data_pixels_sha": "p"}],
                               "b": [{"data_counts_sha": "2", "data_indices_sha": "j",
                                      "data_pixels_sha": "p"}]}) == \
        "x: 1 run on data a, 1 run on data b (indices and counts differ): not pooled"


def test_a_trained_run_records_its_provenance(tmp_path):
    from test_run_train import TINY

    from lt_bench.config import load_config
    from lt_bench.run.train import train

    cfg = load_config([], TINY + ["method=ce", "protocol.epochs=1", "tracking.tracker=local",
                                  f"workspace={tmp_path}"])
    result = train(cfg)
    saved = json.loads(next((tmp_path / "runs").glob("*/results.json")).read_text())
    assert saved["provenance"] == json.loads(json.dumps(result.provenance))
    assert saved["provenance"]["effective_batch_size"] == 64
    assert saved["provenance"]["selection"]["best"] == "best epoch on test"
    again = load_data("synthetic_lt", 20, DataConfig(**dict(cfg.data)))  # the same images
    assert saved["provenance"]["data_fingerprint"] == data_fingerprint(again)["data_fingerprint"]
    [record] = Tracker(cfg).runs_for_leaderboard()
    assert from_tags(record["tags"])["data_fingerprint"] == saved["provenance"]["data_fingerprint"]

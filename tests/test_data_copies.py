"""Copies of CIFAR (lt_bench.data.copies): one pair of archives made here, the same images as
lossless WebP and as JPEG q75 under the same names, so which pixels are equal is known by
construction. Both give one subset; a run says and records which it read; the copy is part of
the run's identity, so JPEG and lossless runs in one workspace never share a trunk, a checkpoint
or a report cell; and images replaced under a finished trunk are refused, not trained on."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lt_bench import LtBenchError
from lt_bench.config import config_hash, load_config
from lt_bench.data import DataConfig, load_data
from lt_bench.run.fork import trunk_folder
from lt_bench.run.train import train, train_trunk
from lt_bench.sweep.trunks import plan
from lt_bench.workspace.provenance import data_fingerprint

CLASSES, PER_CLASS, TEST_PER_CLASS = 4, 12, 2
REAL = (Path(__file__).parents[1] / "../shared/data").resolve()


def images(seed: int = 0) -> np.ndarray:
    """Smooth 32×32 images (8×8 flat blocks): JPEG keeps them close, never equal."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (CLASSES * (PER_CLASS + TEST_PER_CLASS), 4, 4, 3))
    return np.kron(base, np.ones((1, 8, 8, 1))).astype(np.uint8)


def write_archive(root: Path, copy: str, pixels: np.ndarray) -> Path:
    """``cifar10-<copy>.tar.gz`` in the shared data's layout: <name>/{train,test}/<class>/NNNN."""
    ext, options = {"webp": ("webp", {"lossless": True}),
                    "jpeg": ("jpg", {"quality": 75, "subsampling": 2})}[copy]
    archive = root / f"cifar10-{copy}.tar.gz"
    k = 0
    with tarfile.open(archive, "w:gz") as tar:
        for split, n in (("train", PER_CLASS), ("test", TEST_PER_CLASS)):
            for c in range(CLASSES):
                for i in range(n):
                    out = io.BytesIO()
                    Image.fromarray(pixels[k]).save(out, "WEBP" if ext == "webp" else "JPEG",
                                                    **options)
                    k += 1
                    info = tarfile.TarInfo(f"cifar10-{copy}/{split}/c{c}/{i:04d}.{ext}")
                    info.size = len(out.getvalue())
                    tar.addfile(info, io.BytesIO(out.getvalue()))
    return archive


@pytest.fixture
def pair(tmp_path, monkeypatch):
    root = tmp_path / "data"
    root.mkdir()
    for copy in ("webp", "jpeg"):
        write_archive(root, copy, images())
    monkeypatch.setenv("LT_BENCH_CACHE", str(tmp_path / "cache"))
    return root


def load(root: Path, copy: str, imbalance=4):
    return load_data("cifar10_lt", imbalance, DataConfig(root=str(root), copy=copy,
                                                          progress=False))


def test_both_copies_give_one_subset_and_say_which_pixels(pair):
    webp, jpeg = load(pair, "webp"), load(pair, "jpeg")
    assert torch.equal(webp.source_indices, jpeg.source_indices)
    assert webp.train_counts == jpeg.train_counts == [12, 7, 4, 3]  # 12 · 4^(−i/3)
    assert torch.equal(webp.train_labels, jpeg.train_labels)
    original = torch.from_numpy(images()[:CLASSES * PER_CLASS]).permute(0, 3, 1, 2)
    assert torch.equal(webp.train_images, original[webp.source_indices])  # lossless: exact
    assert not torch.equal(jpeg.train_images, webp.train_images)
    assert (webp.copy, webp.encoding) == ("webp", "lossless")
    assert (jpeg.copy, jpeg.encoding) == ("jpeg", "jpeg q75 4:2:0")
    assert "pixels: lossless; data.copy=webp" in webp.source_line
    assert "cifar10-jpeg.tar.gz (data.copy=jpeg)" in webp.source_line
    a, b = data_fingerprint(webp), data_fingerprint(jpeg)
    assert a["data_indices_sha"] == b["data_indices_sha"]
    assert a["data_pixels_sha"] != b["data_pixels_sha"]
    assert (a["data_copy"], b["data_encoding"]) == ("webp", "jpeg q75 4:2:0")


def test_auto_takes_the_lossless_copy_and_a_missing_copy_is_named(pair, tmp_path):
    assert load_config([], [f"data.root={pair}"]).data["copy"] == "webp"
    assert load_config([], [f"data.root={pair}", "data.copy=jpeg"]).data["copy"] == "jpeg"
    (pair / "cifar10-webp.tar.gz").unlink()
    assert load_config([], [f"data.root={pair}"]).data["copy"] == "jpeg"
    with pytest.raises(LtBenchError) as info:
        load(pair, "webp")
    msg = str(info.value)
    assert "\n" not in msg and "data.copy=webp" in msg and "jpeg (cifar10-jpeg.tar.gz)" in msg


TINY = ["dataset=cifar10_lt", "imbalance=4", "protocol.batch_size=16", "protocol.lr=0.05",
        "protocol.warmup_epochs=0", "precision=fp32", "quiet=true", "deterministic=true",
        "tracking.tracker=local", "protocol.epochs=3", "protocol.start_epoch=2",
        "protocol.milestones=[2]", "method=effective_number", "data.progress=false"]


def test_jpeg_and_lossless_runs_in_one_workspace_never_share_a_trunk(pair, tmp_path):
    ws = tmp_path / "ws"
    lossless = load_config([], [*TINY, f"data.root={pair}", f"workspace={ws}"])
    lossy = load_config([], [*TINY, f"data.root={pair}", f"workspace={ws}", "data.copy=jpeg"])
    assert config_hash(lossless) != config_hash(lossy)
    assert trunk_folder(lossless, 1) != trunk_folder(lossy, 1)

    class Job:
        def __init__(self, cfg):
            self.cfg, self.seed = cfg, cfg.seed

    assert len(plan([Job(lossless), Job(lossy)])) == 0  # alone in their groups: no shared trunk
    train_trunk(lossy, 1)
    # even handed the JPEG trunk by hand, a lossless run refuses to continue it
    with pytest.raises(LtBenchError, match="was trained on other data"):
        train(lossless, trunk=str(trunk_folder(lossy, 1)))
    result = train(lossy, trunk=str(trunk_folder(lossy, 1)))
    assert result.provenance["data_copy"] == "jpeg"


def test_images_replaced_under_a_run_are_never_trained_on(pair, tmp_path):
    ws = tmp_path / "ws"
    cfg = load_config([], [*TINY, f"data.root={pair}", f"workspace={ws}"])
    train_trunk(cfg, 1)
    first = train(cfg, trunk=str(trunk_folder(cfg, 1)))
    write_archive(pair, "webp", images(seed=1))  # same copy, same names, other pixels
    run_dir = Path(first.run_dir)
    (run_dir / "results.json").unlink()  # as if interrupted: its own checkpoint is left
    with pytest.raises(LtBenchError, match="was trained on other data"):
        train(cfg)
    (run_dir / "checkpoint.pt").unlink()  # nothing of its own: it would branch from the trunk
    with pytest.raises(LtBenchError, match="was trained on other data"):
        train(cfg, trunk=str(trunk_folder(cfg, 1)))


@pytest.mark.slow
@pytest.mark.skipif(not (REAL / "cifar10-webp.tar.gz").is_file()
                    or not (REAL / "cifar10-jpeg.tar.gz").is_file(),
                    reason=f"the real pair of archives is not in {REAL}")
def test_the_real_pair_gives_one_subset():
    webp, jpeg = load(REAL, "webp", 100), load(REAL, "jpeg", 100)
    assert webp.num_train == jpeg.num_train == 12406
    assert webp.train_counts == jpeg.train_counts
    assert torch.equal(webp.source_indices, jpeg.source_indices)
    assert (webp.encoding, jpeg.encoding) == ("lossless", "jpeg q75 4:2:0")

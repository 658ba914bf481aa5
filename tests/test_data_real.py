"""Integration on the real CIFAR-10 archive (skipped where /work/shared/data is absent)."""

from pathlib import Path

import pytest
import torch

from lt_bench.data import DataConfig, load_data

DATA = (Path(__file__).parents[1] / "../shared/data").resolve()
ARCHIVE = DATA / "cifar10-jpeg.tar.gz"


@pytest.mark.slow
@pytest.mark.skipif(not ARCHIVE.is_file(), reason=f"{ARCHIVE} not present")
def test_real_cifar10_lt_if100():
    # the default cache (LT_BENCH_CACHE or ~/.cache/lt_bench): decoded once, then reused
    data = load_data("cifar10_lt", 100, DataConfig(root=str(DATA)))
    assert data.num_train == sum(data.train_counts) == 12406
    assert data.num_test == 10000 and data.test_counts == [1000] * 10
    assert data.train_counts[0] == 5000 and data.train_counts[-1] == 50
    assert data.classes[0] == "airplane" and data.classes[-1] == "truck"
    x, y = next(data.train_batches(0, 256, device="cpu", seed=0))
    assert x.shape == (256, 3, 32, 32) and y.dtype == torch.int64
    assert abs(float(x.mean())) < 0.5  # normalised with the data set's own mean/std

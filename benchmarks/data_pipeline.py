"""Images/s of lt_bench's CIFAR-LT training pipeline against torchvision ImageFolder + PIL.

    python benchmarks/data_pipeline.py [--root ../shared/data] [--imbalance 100]

Both sides read the real CIFAR-10 archive (``cifar10-jpeg.tar.gz``) and iterate the same
CIFAR-10-LT training subset (IF 100 by default: 12,406 images, the same images on both sides)
with the same augmentation: random crop 32 with 4-pixel zero padding, horizontal flip,
normalisation. lt_bench: uint8 tensors decoded once and cached, batched tensor ops on the device
(CPU here). torchvision: ImageFolder over the extracted archive, PIL transforms
(RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize), DataLoader with
``--workers`` workers. Timings are wall-clock, one run each, after a warm-up epoch.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def lt_bench_side(root: Path, imbalance: float, batch_size: int, epochs: int, cache: str | None):
    from lt_bench.data import DataConfig, load_data

    cfg = DataConfig(root=str(root), cache_dir=cache)
    t0 = time.perf_counter()
    data = load_data("cifar10_lt", imbalance, cfg)
    startup = time.perf_counter() - t0
    for _ in data.train_batches(0, batch_size, device="cpu", seed=0):  # warm-up
        pass
    n = 0
    t0 = time.perf_counter()
    for epoch in range(1, epochs + 1):
        for x, _ in data.train_batches(epoch, batch_size, device="cpu", seed=0):
            n += len(x)
    return data, n / (time.perf_counter() - t0), startup


def torchvision_side(root: Path, data, imbalance: float, batch_size: int, epochs: int,
                     workers: int, cache: str | None):
    import torchvision
    from torchvision import transforms as T

    from lt_bench.data import DataConfig, cache_dir, make_long_tailed
    from lt_bench.data.cache import stat_key
    from lt_bench.data.sources import extract_tar

    archive = root / "cifar10-jpeg.tar.gz"
    dest = cache_dir(DataConfig(cache_dir=cache)) / f"extract-cifar10-jpeg-{stat_key([archive])}"
    t0 = time.perf_counter()
    folder = extract_tar(archive, dest) / "cifar10-jpeg" / "train"
    extract_s = time.perf_counter() - t0
    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize(data.mean, data.std)])
    full = torchvision.datasets.ImageFolder(str(folder), transform=tf)
    keep = make_long_tailed(full.targets, full.classes, imbalance, "exp", 0, str(folder))
    subset = torch.utils.data.Subset(full, keep.tolist())
    assert torch.bincount(torch.tensor(full.targets)[keep]).tolist() == data.train_counts
    loader = torch.utils.data.DataLoader(subset, batch_size=batch_size, shuffle=True,
                                         num_workers=workers, persistent_workers=workers > 0)
    for _ in loader:  # warm-up (also starts the workers)
        pass
    n = 0
    t0 = time.perf_counter()
    for _ in range(epochs):
        for x, _ in loader:
            n += len(x)
    return n / (time.perf_counter() - t0), extract_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(REPO / "../shared/data"))
    parser.add_argument("--imbalance", type=float, default=100.0)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per side")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads for the lt_bench side (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    root = Path(args.root).resolve()
    load = os.getloadavg()[0]

    data, ours, startup = lt_bench_side(root, args.imbalance, args.batch_size, args.epochs,
                                        args.cache_dir)
    theirs, extract_s = torchvision_side(root, data, args.imbalance, args.batch_size,
                                         args.epochs, args.workers, args.cache_dir)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, lt_bench side with {torch.get_num_threads()} intra-op "
          f"thread(s), load average before the run {load:.1f}")
    print(f"data: CIFAR-10-LT IF {args.imbalance:g} train subset, {data.num_train:,} images, "
          f"batch {args.batch_size}, {args.epochs} timed epochs after one warm-up epoch")
    print(f"lt_bench load (from cache if present): {startup:.1f} s; torchvision extraction "
          f"(once): {extract_s:.1f} s")
    print(f"| pipeline | images/s |\n|---|---|\n"
          f"| lt_bench tensor pipeline (CPU) | {ours:,.0f} |\n"
          f"| torchvision ImageFolder + PIL, DataLoader {args.workers} workers | {theirs:,.0f} |")
    print(f"speed-up: {ours / theirs:.1f}×")


if __name__ == "__main__":
    main()

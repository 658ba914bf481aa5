"""Epoch time (training + test evaluation) of lt_bench's harness against a plain PyTorch loop.

    python benchmarks/epoch_time.py [--root ../shared/data] [--epochs 2]

Both sides train the same ResNet-32 (lt_bench's ``resnet32``) on the same CIFAR-10-LT IF 100
training images (real data, ``cifar10-jpeg.tar.gz``), batch 128, SGD, and then score the 10,000
test images. The plain loop is what a user would write: torchvision ImageFolder + PIL transforms
(RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize) + DataLoader with 2
workers, ``F.cross_entropy``. The harness is ``lt_bench.run.train.train`` with the ``ce``, ``dv`` and
``bv`` methods (class-volume statistics gathered in every epoch: ``start_epoch=0``, the worst
case). Every configuration runs ``--epochs`` epochs in this one process, one after the other; the
last epoch's time is reported (the first one warms up caches and workers).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]


def plain_loop(root: Path, epochs: int, precision: str, workers: int = 2) -> float:
    import torchvision
    from torchvision import transforms as T

    from lt_bench.data import DataConfig, cache_dir, make_long_tailed
    from lt_bench.data.cache import stat_key
    from lt_bench.data.sources import extract_tar

    archive = root / "cifar10-jpeg.tar.gz"
    dest = cache_dir(DataConfig()) / f"extract-cifar10-jpeg-{stat_key([archive])}"
    top = extract_tar(archive, dest) / "cifar10-jpeg"
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    train_tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                          T.Normalize(mean, std)])
    test_tf = T.Compose([T.ToTensor(), T.Normalize(mean, std)])
    full = torchvision.datasets.ImageFolder(str(top / "train"), transform=train_tf)
    keep = make_long_tailed(full.targets, full.classes, 100, "exp", 0, str(top / "train"))
    train_set = torch.utils.data.Subset(full, keep.tolist())
    test_set = torchvision.datasets.ImageFolder(str(top / "test"), transform=test_tf)
    loader = torch.utils.data.DataLoader(train_set, batch_size=128, shuffle=True,
                                         num_workers=workers, persistent_workers=True)
    test_loader = torch.utils.data.DataLoader(test_set, batch_size=128, num_workers=workers,
                                              persistent_workers=True)
    return time_epochs(lambda: loader, lambda: test_loader, epochs, precision)


def time_epochs(train_batches, test_batches, epochs: int, precision: str) -> float:
    """Seconds of the last of ``epochs`` epochs of a plain SGD loop over ResNet-32: train on
    ``train_batches()``, then score ``test_batches()``."""
    from lt_bench.backbones import build_backbone

    torch.manual_seed(0)
    model = build_backbone("resnet32", 10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True,
                                weight_decay=5e-4)
    autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16"
                else nullcontext())
    seconds = 0.0
    for _ in range(epochs):
        started = time.perf_counter()
        model.train()
        for x, y in train_batches():
            with autocast:
                loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad(), autocast:
            for x, y in test_batches():
                (model(x).argmax(1) == y).sum().item()
        seconds = time.perf_counter() - started
    return seconds


def model_only(epochs: int, precision: str, train_images: int = 12406,
               test_images: int = 10000) -> float:
    """The floor: the same loop on one ready-made batch tensor, no data pipeline at all."""
    x, y = torch.randn(128, 3, 32, 32), torch.randint(0, 10, (128,))

    def batches(total):
        return lambda: ((x[:min(128, total - s)], y[:min(128, total - s)])
                        for s in range(0, total, 128))

    return time_epochs(batches(train_images), batches(test_images), epochs, precision)


def harness(root: Path, epochs: int, method: str, precision: str) -> float:
    from lt_bench.config import load_config
    from lt_bench.run.train import train

    with tempfile.TemporaryDirectory() as workspace:
        cfg = load_config([], [
            "dataset=cifar10_lt", "imbalance=100", f"data.root={root}", f"method={method}",
            "protocol=quick", f"protocol.epochs={epochs}", "protocol.milestones=[]",
            "protocol.start_epoch=0", "protocol.warmup_epochs=0", f"precision={precision}",
            "quiet=true", f"workspace={workspace}",
            "tracking.tracker=local",
        ])
        results = train(cfg)
    return results.history[-1]["time/epoch_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(REPO / "../shared/data"))
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    root = Path(args.root).resolve()
    rows = []

    def record(name, seconds):
        rows.append((name, seconds))
        print(f"{name}: {seconds:.1f} s", flush=True)

    for precision in ("fp32", "bf16"):
        record(f"model alone (no data pipeline), {precision}", model_only(args.epochs, precision))
        record(f"plain PyTorch loop, {precision}", plain_loop(root, args.epochs, precision))
        for method in ("ce", "dv", "bv"):
            record(f"lt_bench {method}, {precision}", harness(root, args.epochs, method, precision))

    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; CIFAR-10-LT IF 100 (12,406 train images), "
          f"10,000 test images, ResNet-32, batch 128; last of {args.epochs} epochs\n")
    print("| configuration | epoch (train + test) s | vs plain loop, same precision |")
    print("|---|---|---|")
    plain = {p: s for n, s in rows if n.startswith("plain") for p in ("fp32", "bf16") if p in n}
    for name, seconds in rows:
        precision = "bf16" if "bf16" in name else "fp32"
        print(f"| {name} | {seconds:.1f} | {plain[precision] / seconds:.2f}× |")


if __name__ == "__main__":
    main()

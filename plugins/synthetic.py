"""``synthetic_lt``: generated long-tailed images, for smoke tests of plugins and of the harness.

Each class is a fixed random colour pattern plus noise, 16×16 pixels, so a small network learns
it in a few epochs on a CPU. Nothing is read from disk. ``data.num_classes`` (default 5) sets the
class count; the head class has 200 training images, every class 20 test images.
"""

from __future__ import annotations

import torch

import lt_bench
from lt_bench.data import TensorData, lt_counts
from lt_bench.data.pipeline import CIFAR_FIXED_MEAN, CIFAR_FIXED_STD

N_MAX, N_TEST, SIDE = 200, 20, 16


def synthetic_lt(cfg, *, imbalance: float | None = None) -> TensorData:
    """Generated class-conditional images (no files; for smoke tests)."""
    num_classes = cfg.num_classes or 5
    counts = lt_counts(N_MAX, num_classes, imbalance, cfg.profile)
    gen = torch.Generator().manual_seed(cfg.subset_seed)
    patterns = torch.rand(num_classes, 3, SIDE, SIDE, generator=gen) * 255

    def draw(per_class: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.repeat_interleave(torch.arange(num_classes), torch.tensor(per_class))
        noise = torch.randn(len(labels), 3, SIDE, SIDE, generator=gen) * 40
        return (patterns[labels] + noise).clamp(0, 255).to(torch.uint8), labels

    train_images, train_labels = draw(counts)
    test_images, test_labels = draw([N_TEST] * num_classes)
    val_images, val_labels = draw([cfg.val_per_class] * num_classes)  # fresh draws, balanced
    fixed = cfg.normalize == "cifar_fixed"  # honoured like CIFAR's, so a protocol runs as given

    def make(images, labels, **more) -> TensorData:
        return TensorData("synthetic_lt", [f"class{i}" for i in range(num_classes)], images,
                          labels, test_images, test_labels,
                          mean=CIFAR_FIXED_MEAN if fixed else [0.5] * 3,
                          std=CIFAR_FIXED_STD if fixed else [0.3] * 3, sampler=cfg.sampler,
                          augment=cfg.augment, padding=2, pad_mode=cfg.pad_mode, **more)

    data = make(train_images, train_labels, val_images=val_images, val_labels=val_labels)
    if cfg.meta_per_class:  # fresh draws too, after the others so that those stay the same
        data.meta = make(*draw([cfg.meta_per_class] * num_classes))
    return data


@lt_bench.hookimpl
def lt_bench_register_datasets(register):
    register("synthetic_lt", synthetic_lt)

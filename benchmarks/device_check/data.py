"""``cifar_shaped_lt``: a generated stand-in for CIFAR-10-LT with the same shapes and counts, for
the device check when the real archive is not at hand. A plugin file, loaded with the config
key ``plugins=[benchmarks/device_check/data.py]``.

10 classes (``data.num_classes``), 32×32×3 uint8 images, the CIFAR-10-LT training counts at the
given imbalance (head class 5,000: 12,406 images at IF 100) and 1,000 test images per class; each
image is its class's fixed random pattern plus heavy noise, so the timing is CIFAR's and the task
is learnable but not trivial.
"""

from __future__ import annotations

import torch

import lt_bench
from lt_bench.data import TensorData, lt_counts

N_MAX, N_TEST, SIDE, CLASSES, NOISE = 5000, 1000, 32, 10, 70.0


def cifar_shaped_lt(cfg, *, imbalance: float | None = None) -> TensorData:
    """CIFAR-10-LT-shaped generated images: 32×32, head class 5,000, 1,000 test per class."""
    num_classes = cfg.num_classes or CLASSES
    counts = lt_counts(N_MAX, num_classes, imbalance, cfg.profile)
    gen = torch.Generator().manual_seed(cfg.subset_seed)
    patterns = torch.rand(num_classes, 3, SIDE, SIDE, generator=gen) * 255

    def draw(per_class: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.repeat_interleave(torch.arange(num_classes), torch.tensor(per_class))
        images = torch.empty(len(labels), 3, SIDE, SIDE, dtype=torch.uint8)
        for start in range(0, len(labels), 4096):  # in chunks: the float noise of 22k images
            part = labels[start:start + 4096]      # at once would need 0.3 GB
            noise = torch.randn(len(part), 3, SIDE, SIDE, generator=gen) * NOISE
            images[start:start + 4096] = (patterns[part] + noise).clamp(0, 255).to(torch.uint8)
        return images, labels

    train_images, train_labels = draw(counts)
    test_images, test_labels = draw([N_TEST] * num_classes)
    val_images, val_labels = draw([cfg.val_per_class] * num_classes)
    return TensorData("cifar_shaped_lt", [f"class{i}" for i in range(num_classes)], train_images,
                      train_labels, test_images, test_labels, mean=[0.5] * 3, std=[0.3] * 3,
                      sampler=cfg.sampler, augment=cfg.augment, padding=4,
                      val_images=val_images, val_labels=val_labels)


@lt_bench.hookimpl
def lt_bench_register_datasets(register):
    register("cifar_shaped_lt", cifar_shaped_lt)

"""Long-tailed class counts (exp / step profiles), the seeded per-class subset and the held-out
validation split."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from lt_bench.errors import LtBenchError


def check_imbalance(imbalance: float | None) -> float | None:
    """None or a float ≥ 1; anything else is a clear error."""
    if imbalance is None:
        return None
    try:
        value = float(imbalance)
    except (TypeError, ValueError) as exc:
        raise LtBenchError(f"imbalance must be a number ≥ 1 or null, got {imbalance!r}") from exc
    if not value >= 1.0:  # also catches NaN
        raise LtBenchError(
            f"imbalance (IF = n_max/n_min) must be ≥ 1, got {imbalance!r}; the literature uses "
            "10…200, and 1 or null keeps the data balanced"
        )
    return value


def lt_counts(n_max: int, num_classes: int, imbalance: float, profile: str = "exp") -> list[int]:
    """Per-class counts of a long-tailed subset with imbalance factor IF = n_max/n_min.

    exp:  n_i = int(n_max · IF^(−i/(C−1)))   (computed as (1/IF)^(i/(C−1)) like LDAM-DRW)
    step: the first half (C//2) of the classes keep n_max, the rest int(n_max/IF).
    """
    imbalance = check_imbalance(imbalance)
    if imbalance is None:
        return [int(n_max)] * num_classes
    if profile == "exp":
        if num_classes == 1:
            return [int(n_max)]
        return [int(n_max * (1.0 / imbalance) ** (i / (num_classes - 1.0)))
                for i in range(num_classes)]
    if profile == "step":
        half = num_classes // 2
        return [int(n_max)] * half + [int(n_max / imbalance)] * (num_classes - half)
    raise LtBenchError(f"data.profile={profile!r} is not valid; choose exp or step")


def select_subset(labels: Sequence[int] | torch.Tensor, counts: Sequence[int],
                  subset_seed: int = 0) -> torch.Tensor:
    """Indices (sorted) keeping ``counts[c]`` images of each class c, chosen by a seeded shuffle.

    One ``torch.Generator`` seeded with ``subset_seed`` shuffles each class's images in turn
    (classes in order), independent of any training seed, so every method and training seed
    sees the same images; the first ``counts[c]`` of the shuffle are kept, so a larger IF keeps a
    subset of what a smaller one keeps.
    """
    labels = torch.as_tensor(labels, dtype=torch.long)
    gen = torch.Generator().manual_seed(int(subset_seed))
    keep = []
    for c, n in enumerate(counts):
        idx = torch.nonzero(labels == c, as_tuple=True)[0]
        if n > len(idx):
            raise LtBenchError(
                f"class {c} has {len(idx)} images but the long-tailed profile needs {n}"
            )
        perm = torch.randperm(len(idx), generator=gen)
        keep.append(idx[perm[:n]])
    return torch.sort(torch.cat(keep)).values if keep else torch.zeros(0, dtype=torch.long)


def make_long_tailed(labels, classes: Sequence[str], imbalance: float | None, profile: str,
                     subset_seed: int, source: str) -> torch.Tensor:
    """Indices of the long-tailed training subset of balanced data (all when IF is 1 or None).

    ``n_max`` is the smallest class's size (equal to every class's for balanced data), so the
    profile is always feasible. A class the profile would leave empty is an error.
    """
    labels = torch.as_tensor(labels, dtype=torch.long)
    imbalance = check_imbalance(imbalance)
    available = torch.bincount(labels, minlength=len(classes)).tolist()
    check_not_empty(available, classes, source)
    if imbalance is None or imbalance == 1.0:
        return torch.arange(len(labels))
    n_max = min(available)
    counts = lt_counts(n_max, len(classes), imbalance, profile)
    for c, n in enumerate(counts):
        if n < 1:
            raise LtBenchError(
                f"imbalance {imbalance:g} leaves class {classes[c]!r} of {source} empty "
                f"(n_max = {n_max}); use an imbalance ≤ {n_max}"
            )
    return select_subset(labels, counts, subset_seed)


def check_not_empty(counts: Sequence[int], classes: Sequence[str], source: str) -> None:
    for c, n in enumerate(counts):
        if n == 0:
            raise LtBenchError(
                f"class {classes[c]!r} (label {c}) has no training images in {source}; "
                "add images for it or remove the class"
            )


def refuse_empty_test(labels, source: str) -> None:
    """Refuse a test split without images: every run would score 0 and look finished. The
    loaders of image folders call it before decoding; ``check_splits`` for every data set."""
    if not len(labels):
        raise LtBenchError(f"the test split {source} holds no images: put each class's test "
                           "images in it (test/<class>/<image> for an image folder)")


def check_splits(data, name: str) -> None:
    """What every data set must hold, checked in ``load_data`` whoever made it (a plugin's
    too): training images in every class and a test split, with a warning for classes
    without test images."""
    source = getattr(data, "test_source", None) or f"of data set {name!r}"
    check_not_empty(data.train_counts, data.classes, getattr(data, "train_source", None)
                    or f"the training split of data set {name!r}")
    check_test_split(data.test_labels, data.classes, source)


def check_test_split(labels, classes: Sequence[str], source: str) -> None:
    """``refuse_empty_test``; then warn, naming them, about classes without test images: their
    per-class accuracy is None in results.json, and the overall and many / medium / few
    accuracies pool the test images there are."""
    counts = torch.bincount(torch.as_tensor(labels, dtype=torch.long),
                            minlength=len(classes)).tolist()
    refuse_empty_test(labels, source)
    empty = [str(classes[c]) for c, n in enumerate(counts) if n == 0]
    if empty:
        shown = ", ".join(empty[:10]) + (f" and {len(empty) - 10} more" if len(empty) > 10 else "")
        logging.getLogger(__name__).warning(
            "%d class(es) have no test images in %s: %s; they have no per-class accuracy and "
            "count in no other accuracy", len(empty), source, shown)


def hold_out_validation(labels, keep: torch.Tensor, per_class: int, subset_seed: int,
                        classes: Sequence[str], source: str, *, taken=None,
                        key: str = "data.val_per_class", salt: int = 7919
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(train, val)`` indices: a balanced validation set of ``per_class`` images per class.

    A class's validation images come first from the images the long-tailed profile left out
    (CIFAR-LT's tail classes leave thousands), then from its training images: the head class,
    which keeps everything, gives up ``per_class`` of its training images. The draw has its own
    seeded generator, so the training subset of the other classes is unchanged.

    The meta set (``data.meta_per_class``) is held out the same way, with its own stream
    (``salt``), after the validation set (``taken``: images already held out). Its images are
    never trained on, and the head class ends with n_max − per_class images, as in Jamal et
    al.'s and Meta-Weight-Net's code (there the held-out images are taken before the long-tailed
    draw, so the other classes' subsets change; here they keep theirs).
    """
    labels = torch.as_tensor(labels, dtype=torch.long)
    kept = torch.zeros(len(labels), dtype=torch.bool)
    kept[keep] = True
    free = torch.ones(len(labels), dtype=torch.bool)
    if taken is not None:
        free[taken] = False
    gen = torch.Generator().manual_seed(int(subset_seed) + salt)  # not the subset's stream
    val = []
    for c, name in enumerate(classes):
        in_class = labels == c
        left_out = torch.nonzero(in_class & ~kept & free, as_tuple=True)[0]
        trained = torch.nonzero(in_class & kept, as_tuple=True)[0]
        from_train = per_class - len(left_out)
        if from_train >= len(trained):
            raise LtBenchError(
                f"{key}={per_class} would leave class {name!r} of {source} with no "
                f"training image (it has {len(trained)} training and {len(left_out)} unused "
                f"images); lower {key} below {len(trained) + len(left_out)}"
            )
        pool = torch.cat([left_out[torch.randperm(len(left_out), generator=gen)],
                          trained[torch.randperm(len(trained), generator=gen)]])
        val.append(pool[:per_class])
    val = torch.sort(torch.cat(val)).values
    held = torch.zeros(len(labels), dtype=torch.bool)
    held[val] = True
    train = torch.nonzero(kept & ~held, as_tuple=True)[0]
    return train, val

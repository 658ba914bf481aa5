"""``LongTailedData``: what every dataset factory returns (counts, batches, description)."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from lt_bench.data.groups import FEW, MANY, group_sizes
from lt_bench.data.sampling import epoch_order, shard_train


class LongTailedData:
    """A long-tailed training set, a balanced test set and an optional held-out validation set
    (``data.val_per_class``), with their batch iterators.

    Subclasses implement ``train_batches`` and ``test_batches`` (``split="test"`` or ``"val"``);
    the sample order of an epoch comes from :func:`lt_bench.data.sampling.epoch_order` (seed,
    epoch and ``sampler``).
    """

    def __init__(self, name: str, classes: Sequence[str], train_labels: Tensor,
                 test_labels: Tensor, sampler: str = "none", val_labels: Tensor | None = None):
        self.name = name
        self.classes = list(classes)
        self.train_labels = torch.as_tensor(train_labels, dtype=torch.long)
        self.test_labels = torch.as_tensor(test_labels, dtype=torch.long)
        self.val_labels = torch.as_tensor([] if val_labels is None else val_labels,
                                          dtype=torch.long)
        self.sampler = sampler
        #: the training images' indices into the source's training split, in training order
        #: (the builders set it; None when a data set does not say): part of the run's data
        #: fingerprint (``lt_bench.workspace.provenance``)
        self.source_indices: Tensor | None = None
        #: the balanced meta set held out of training (``data.meta_per_class``), as a data set
        #: of its own whose training batches are the meta batches; None without one
        self.meta: LongTailedData | None = None
        #: which copy of the source the pixels come from (``lt_bench.data.copies``: pickle,
        #: webp, jpeg) and how its files are encoded (``lossless``, ``jpeg q75 4:2:0``), where
        #: the loader knows; ``source_line`` is what a run says about them
        self.copy: str | None = None
        self.encoding: str | None = None
        self.source_line: str | None = None
        #: where the test split was read, for the messages of ``longtail.check_splits``
        self.test_source: str | None = None
        c = len(self.classes)
        self.train_counts: list[int] = torch.bincount(self.train_labels, minlength=c).tolist()
        self.test_counts: list[int] = torch.bincount(self.test_labels, minlength=c).tolist()
        lo = min(self.train_counts) if self.train_counts else 0
        self.imbalance: float = (max(self.train_counts) / lo) if lo else float("inf")

    # -- sizes ------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def num_train(self) -> int:
        return len(self.train_labels)

    @property
    def num_test(self) -> int:
        return len(self.test_labels)

    @property
    def num_val(self) -> int:
        return len(self.val_labels)

    def eval_labels(self, split: str) -> Tensor:
        if split not in ("test", "val"):
            raise ValueError(f"split must be 'test' or 'val', got {split!r}")
        return self.test_labels if split == "test" else self.val_labels

    def samples_per_rank(self, world_size: int = 1) -> int:
        """Training samples each rank sees per epoch (the tail is cut to a multiple of ranks)."""
        return self.num_train // world_size

    def num_train_batches(self, batch_size: int, world_size: int = 1,
                          drop_last: bool = False) -> int:
        n = self.samples_per_rank(world_size)
        return n // batch_size if drop_last else math.ceil(n / batch_size)

    # -- order ------------------------------------------------------------------------------
    def train_indices(self, epoch: int, *, seed: int, rank: int = 0,
                      world_size: int = 1) -> Tensor:
        """This rank's training indices for the epoch (CPU int64), in batch order."""
        order = epoch_order(self.train_labels, self.num_classes, self.sampler, seed, epoch)
        return shard_train(order, rank, world_size)

    def test_indices(self, rank: int = 0, world_size: int = 1, split: str = "test") -> Tensor:
        """A contiguous block of the test (or val) set: together the ranks' blocks are the set."""
        return torch.tensor_split(torch.arange(len(self.eval_labels(split))), world_size)[rank]

    # -- batches (subclasses) -----------------------------------------------------------------
    def train_batches(self, epoch: int, batch_size: int, *, device, seed: int, rank: int = 0,
                      world_size: int = 1, drop_last: bool = False
                      ) -> Iterator[tuple[Tensor, Tensor]]:
        raise NotImplementedError

    def test_batches(self, batch_size: int, *, device, rank: int = 0, world_size: int = 1,
                     split: str = "test") -> Iterator[tuple[Tensor, Tensor]]:
        raise NotImplementedError

    # -- provenance ---------------------------------------------------------------------------
    def pixel_digest(self) -> tuple[str | None, str]:
        """(sha256 hex of the training images' decoded pixels, what it covers), or (None, why)
        for a data set that cannot give them. ``TensorData`` digests the images it holds,
        ``LoaderData`` a fixed sample it decodes (see theirs)."""
        return None, f"no pixels: {type(self).__name__} does not give them"

    # -- description --------------------------------------------------------------------------
    def describe(self, many_above: int = MANY, few_below: int = FEW) -> dict:
        """The data at a glance; the groups by the run's thresholds (``eval.*``)."""
        return {
            "name": self.name,
            "classes": list(self.classes),
            "num_classes": self.num_classes,
            "counts": list(self.train_counts),
            "total": int(sum(self.train_counts)),
            "imbalance": self.imbalance,
            "groups": group_sizes(self.train_counts, many_above, few_below),
            "group_thresholds": {"many_above": many_above, "few_below": few_below},
            "test_counts": list(self.test_counts),
            "test_total": int(sum(self.test_counts)),
            "val_total": self.num_val,
            "meta_total": self.meta.num_train if self.meta is not None else 0,
            "sampler": self.sampler,
            "copy": self.copy,
            "encoding": self.encoding,
        }

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.name!r}, classes={self.num_classes}, "
                f"train={self.num_train}, test={self.num_test}, IF={self.imbalance:.1f})")


def every_kth(n: int, most: int) -> int:
    """The smallest step k that takes at most ``most`` of ``n`` items (every k-th from the
    first): a sample fixed by the data alone, so a run and its rerun digest the same images."""
    return max(1, math.ceil(n / max(1, most)))


def sample_note(n: int, step: int) -> str:
    """What a digest of every ``step``-th of ``n`` training images covers, in words."""
    if step == 1:
        return f"all {n} training images"
    suffix = "th" if step % 100 in (11, 12, 13) else {1: "st", 2: "nd", 3: "rd"}.get(step % 10,
                                                                                   "th")
    return f"{math.ceil(n / step)} of {n} training images (every {step}{suffix} from the first)"


def image_sha(images) -> str:
    """sha256 of image tensors (or batches of them), each with its dtype and shape, so that a
    crop, a resize or a cast shows, not only a changed pixel."""
    digest = hashlib.sha256()
    for image in images:
        image = image.detach().cpu().contiguous()
        digest.update(f"{image.dtype}{tuple(image.shape)};".encode())
        digest.update(image.flatten().view(torch.uint8).numpy().data)
    return digest.hexdigest()

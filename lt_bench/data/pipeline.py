"""Feeding the model: decoded uint8 tensors on the device (small images) or DataLoader workers.

Small data (CIFAR-LT, any images ≤ 64 px) lives as one uint8 tensor ``[N, 3, H, W]`` on the
training device; a batch is one gather that crops (zero or reflect padding, ``data.pad_mode``),
flips and casts at once, then a fused normalisation: no PIL and no per-sample Python. Large data
goes through ``torchvision.transforms.v2`` in DataLoader workers, each sample seeded from (seed,
epoch, position) so the batches do not depend on the number of workers.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from lt_bench.data.base import LongTailedData, every_kth, image_sha, sample_note
from lt_bench.data.config import PAD_MODES
from lt_bench.data.sampling import generator
from lt_bench.data.sources import decode
from lt_bench.errors import LtBenchError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: data.normalize=cifar_fixed: the constants of the class-volume authors' CIFAR code
CIFAR_FIXED_MEAN = tuple(v / 255 for v in (125.3, 123.0, 113.9))
CIFAR_FIXED_STD = tuple(v / 255 for v in (63.0, 62.1, 66.7))
#: the pixel digest of images held in memory covers at most this many bytes (~0.3 s of sha256)
DIGEST_BYTES = 512 * 2**20
#: the pixel digest of images decoded from files covers at most this many (~0.5 s for JPEGs)
DIGEST_DECODED = 128


# -- batched tensor augmentation -----------------------------------------------------------------
def crop_flip_params(n: int, height: int, width: int, padding: int, gen: torch.Generator,
                     flip: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """Per-sample crop offsets ``oy, ox`` in [0, 2·padding] and flip flags, from ``gen``."""
    oy = torch.randint(0, 2 * padding + 1, (n,), generator=gen)
    ox = torch.randint(0, 2 * padding + 1, (n,), generator=gen)
    fl = torch.rand(n, generator=gen) < 0.5 if flip else torch.zeros(n, dtype=torch.bool)
    return oy, ox, fl


def check_pad_mode(mode: str) -> str:
    if mode not in PAD_MODES:
        raise LtBenchError(f"data.pad_mode={mode!r} is not valid; choose one of: "
                           f"{', '.join(PAD_MODES)}")
    return mode


def pad_images(images: Tensor, padding: int, mode: str = "zero") -> Tensor:
    """``[N, C, H, W]`` padded by ``padding`` on every side: zeros, or ``reflect``: mirrored
    about the border pixel, which is not repeated (numpy's and torch's 'reflect')."""
    if not padding:
        return images
    if mode == "zero":
        return torch.nn.functional.pad(images, (padding, padding, padding, padding))
    check_pad_mode(mode)
    h, w = images.shape[-2:]
    if padding >= min(h, w):
        raise LtBenchError(f"data.pad_mode=reflect cannot pad {padding} pixels around {h}×{w} "
                           "images (at most a side − 1); use data.pad_mode=zero")

    def mirrored(n: int) -> Tensor:  # -p … n+p−1 folded back into 0 … n−1
        i = torch.arange(-padding, n + padding, device=images.device).abs()
        return torch.where(i >= n, 2 * (n - 1) - i, i)

    # an index gather rather than F.pad(mode="reflect"): the same on every dtype and device
    return images.index_select(-2, mirrored(h)).index_select(-1, mirrored(w))


def crop_flip(images: Tensor, index: Tensor, oy: Tensor, ox: Tensor, flip: Tensor,
              padding: int, pad_mode: str = "zero") -> Tensor:
    """``images[index]`` randomly cropped (padding ``padding``, see :func:`pad_images`) and
    flipped, batched.

    Equivalent to RandomCrop((H, W), padding, padding_mode) + RandomHorizontalFlip per sample.
    uint8 in, uint8 out, ``[B, 3, H, W]``, on ``images``' device. (The training loop keeps its
    images padded once and calls :func:`crop_flip_padded` directly.)
    """
    x = pad_images(images[index.to(images.device)], padding, pad_mode)
    return crop_flip_padded(x, torch.arange(len(x), device=x.device), oy, ox, flip, padding)


def crop_flip_padded(padded: Tensor, index: Tensor, oy: Tensor, ox: Tensor, flip: Tensor,
                     padding: int) -> Tensor:
    """The crop + flip of :func:`crop_flip` from images already padded by ``padding``.

    Every (2p+1)² crop window is a strided view of the padded images (``unfold``); one advanced
    index gathers each sample's window; the flip is a select between the batch and its mirror,
    with no ``nonzero``, so a GPU never waits for the host and the step can be graph-captured.
    """
    h, w = padded.shape[-2] - 2 * padding, padded.shape[-1] - 2 * padding
    dev = padded.device
    windows = padded.unfold(2, h, 1).unfold(3, w, 1)  # [N, 3, 2p+1, 2p+1, H, W], a view
    out = windows[index.to(dev), :, oy.to(dev), ox.to(dev)]
    return torch.where(flip.to(dev)[:, None, None, None], out.flip(-1), out)


def norm_params(mean: Sequence[float], std: Sequence[float], device=None) -> tuple[Tensor, Tensor]:
    """(scale, bias) with x·scale + bias = (x/255 − mean)/std, shaped ``[1, 3, 1, 1]``."""
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=device)[None, :, None, None]
    std_t = torch.as_tensor(std, dtype=torch.float32, device=device)[None, :, None, None]
    return 1.0 / (255.0 * std_t), -mean_t / std_t


def normalize(images: Tensor, mean: Sequence[float], std: Sequence[float],
              params: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """uint8 ``[B, 3, H, W]`` → float32 ``(x/255 − mean)/std`` (one cast, two in-place ops)."""
    scale, bias = params or norm_params(mean, std, images.device)
    return images.float().mul_(scale).add_(bias)


def channel_stats(images: Tensor, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images in [0, 1] units (chunked, float64 sums)."""
    s = torch.zeros(images.shape[1], dtype=torch.float64)
    s2 = torch.zeros_like(s)
    n = 0
    for i in range(0, len(images), chunk):
        x = images[i:i + chunk].double() / 255.0
        s += x.sum(dim=(0, 2, 3))
        s2 += (x * x).sum(dim=(0, 2, 3))
        n += x.numel() // x.shape[1]
    mean = s / max(n, 1)
    std = (s2 / max(n, 1) - mean * mean).clamp(min=1e-12).sqrt()
    return mean.tolist(), std.tolist()


def _randaugment_each(images: Tensor, seed_gen: torch.Generator) -> Tensor:
    """RandAugment per sample (opt-in, per-sample Python), each sample seeded from ``seed_gen``."""
    from torchvision.transforms import v2

    ra = v2.RandAugment()
    seeds = torch.randint(0, 2**62, (len(images),), generator=seed_gen).tolist()
    out = torch.empty_like(images)
    for i, s in enumerate(seeds):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s)
            out[i] = ra(images[i])
    return out


# -- small data: tensors on the device -----------------------------------------------------------
class TensorData(LongTailedData):
    """Decoded uint8 images held on the training device; batched augmentation there."""

    def __init__(self, name: str, classes: Sequence[str], train_images: Tensor,
                 train_labels: Tensor, test_images: Tensor, test_labels: Tensor, *,
                 mean: Sequence[float], std: Sequence[float], sampler: str = "none",
                 augment: str = "standard", padding: int | None = None,
                 val_images: Tensor | None = None, val_labels: Tensor | None = None,
                 pad_mode: str = "zero"):
        super().__init__(name, classes, train_labels, test_labels, sampler, val_labels)
        self.pad_mode = check_pad_mode(pad_mode)
        self.train_images = train_images
        self.test_images = test_images
        self.val_images = test_images[:0] if val_images is None else val_images
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]
        self.augment = augment
        h, w = train_images.shape[-2:]
        self.padding = min(h, w) // 8 if padding is None else padding  # 4 for 32×32
        self._device_copies: dict[str, tuple[Tensor, ...]] = {}

    def pixel_digest(self) -> tuple[str | None, str]:
        """Of every training image, already decoded in memory (CIFAR-10-LT at IF 100: 38 MB,
        about 25 ms); over ``DIGEST_BYTES``, of every k-th image from the first, the smallest k
        that keeps the digest within it."""
        images, n = self.train_images, len(self.train_images)
        per_image = images[:1].numel() * images.element_size()
        step = every_kth(n, DIGEST_BYTES // max(1, per_image))
        return image_sha([images[::step]]), sample_note(n, step)

    def _on(self, device) -> tuple[Tensor, ...]:
        """(padded train images, train labels, test images, test labels, norm, val images,
        val labels) on ``device``."""
        key = str(torch.device(device))
        if key not in self._device_copies:
            p = self.padding if self.augment != "none" else 0
            train = pad_images(self.train_images.to(device), p, self.pad_mode)
            self._device_copies = {key: (
                train, self.train_labels.to(device), self.test_images.to(device),
                self.test_labels.to(device), norm_params(self.mean, self.std, device),
                self.val_images.to(device), self.val_labels.to(device))}
        return self._device_copies[key]

    def train_batches(self, epoch, batch_size, *, device, seed, rank=0, world_size=1,
                      drop_last=False) -> Iterator[tuple[Tensor, Tensor]]:
        padded, labels, _, _, norm, _, _ = self._on(device)
        index = self.train_indices(epoch, seed=seed, rank=rank, world_size=world_size)
        index = index[:self.num_train_batches(batch_size, world_size, drop_last) * batch_size]
        gen = generator(seed, epoch, rank, 1)
        p = self.padding if self.augment != "none" else 0
        h, w = self.train_images.shape[-2:]
        oy, ox, flip = crop_flip_params(len(index), h, w, p, gen, flip=self.augment != "none")
        dev = padded.device
        index_d, oy_d, ox_d, flip_d = (t.to(dev, non_blocking=True)
                                       for t in (index, oy, ox, flip))
        for start in range(0, len(index), batch_size):
            sl = slice(start, start + batch_size)
            x = crop_flip_padded(padded, index_d[sl], oy_d[sl], ox_d[sl], flip_d[sl], p)
            if self.augment == "randaugment":
                x = _randaugment_each(x, gen)
            yield normalize(x, self.mean, self.std, norm), labels[index_d[sl]]

    def test_batches(self, batch_size, *, device, rank=0, world_size=1, split="test"
                     ) -> Iterator[tuple[Tensor, Tensor]]:
        _, _, test_images, test_labels, norm, val_images, val_labels = self._on(device)
        images, labels = ((test_images, test_labels) if split == "test"
                          else (val_images, val_labels))
        idx = self.test_indices(rank, world_size, split)
        lo, hi = (int(idx[0]), int(idx[-1]) + 1) if len(idx) else (0, 0)
        for start in range(lo, hi, batch_size):
            end = min(start + batch_size, hi)
            yield normalize(images[start:end], self.mean, self.std, norm), labels[start:end]


# -- large data: DataLoader workers -------------------------------------------------------------
def read_image(path: str) -> Tensor:
    """An RGB uint8 tensor ``[3, H, W]``; a clear error naming the file when it is corrupt."""
    return torch.from_numpy(decode(path, path)).permute(2, 0, 1)


def build_transforms(train: bool, image_size: int, augment: str, mean, std):
    from torchvision.transforms import v2

    tail = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    if train and augment != "none":
        ops = [v2.RandomResizedCrop(image_size, antialias=True), v2.RandomHorizontalFlip()]
        if augment == "randaugment":
            ops.append(v2.RandAugment())
        return v2.Compose(ops + tail)
    return v2.Compose([v2.Resize(int(math.floor(image_size / 0.875)), antialias=True),
                       v2.CenterCrop(image_size)] + tail)


class FileDataset(torch.utils.data.Dataset):
    """Images read from paths; an item ``(i, sample_seed)`` seeds the random transform."""

    def __init__(self, paths: Sequence[str], labels: Tensor, transform):
        self.paths = list(paths)
        self.labels = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, item):
        i, sample_seed = item if isinstance(item, tuple) else (item, None)
        image = read_image(self.paths[i])
        if sample_seed is None:
            return self.transform(image), self.labels[i]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed)
            return self.transform(image), self.labels[i]


class ListSampler(torch.utils.data.Sampler):
    """Yields whatever list it is given before each epoch (the loader's workers persist)."""

    def __init__(self):
        self.items: list = []

    def __iter__(self):
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


def _one_line(exc: Exception) -> LtBenchError:
    """A worker's LtBenchError comes back wrapped with a traceback: keep its last line."""
    lines = [ln for ln in str(exc).splitlines() if ln.strip()]
    last = lines[-1] if lines else str(exc)
    for prefix in ("lt_bench.errors.LtBenchError: ", "LtBenchError: "):
        if last.startswith(prefix):
            last = last[len(prefix):]
    return LtBenchError(last)


class LoaderData(LongTailedData):
    """Images decoded and augmented by DataLoader workers (torchvision.transforms.v2)."""

    def __init__(self, name: str, classes: Sequence[str], train_paths: Sequence[str],
                 train_labels: Tensor, test_paths: Sequence[str], test_labels: Tensor, *,
                 image_size: int = 224, augment: str = "standard", workers: int = 2,
                 sampler: str = "none", mean=IMAGENET_MEAN, std=IMAGENET_STD,
                 val_paths: Sequence[str] = (), val_labels: Tensor | None = None):
        super().__init__(name, classes, train_labels, test_labels, sampler, val_labels)
        self.train_paths = list(train_paths)
        self.test_paths = list(test_paths)
        self.val_paths = list(val_paths)
        self.image_size = image_size
        self.augment = augment
        self.workers = workers
        self.mean, self.std = list(mean), list(std)
        self.train_set = FileDataset(self.train_paths, self.train_labels,
                                     build_transforms(True, image_size, augment, mean, std))
        self.test_set = FileDataset(self.test_paths, self.test_labels,
                                    build_transforms(False, image_size, augment, mean, std))
        self.val_set = FileDataset(self.val_paths, self.val_labels,
                                   build_transforms(False, image_size, augment, mean, std))
        self._loaders: dict = {}

    def pixel_digest(self) -> tuple[str | None, str]:
        """Of a fixed sample, decoded as training decodes them (before any transform): every
        k-th training image from the first, at most ``DIGEST_DECODED``. Decoding a whole
        ImageNet-LT for a digest would take minutes."""
        n = len(self.train_paths)
        step = every_kth(n, DIGEST_DECODED)
        return (image_sha(read_image(self.train_paths[i]) for i in range(0, n, step)),
                sample_note(n, step))

    def _loader(self, dataset, batch_size: int, drop_last: bool, device) -> tuple:
        pin = torch.device(device).type == "cuda"
        key = (id(dataset), batch_size, drop_last, pin)
        if key not in self._loaders:
            sampler = ListSampler()
            loader = torch.utils.data.DataLoader(
                dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last,
                num_workers=self.workers, pin_memory=pin,
                persistent_workers=self.workers > 0,
                prefetch_factor=4 if self.workers > 0 else None,
            )
            self._loaders[key] = (loader, sampler)
        return self._loaders[key]

    def _iterate(self, loader, device):
        try:
            for x, y in loader:
                yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        except LtBenchError as exc:
            raise _one_line(exc) from None

    def train_batches(self, epoch, batch_size, *, device, seed, rank=0, world_size=1,
                      drop_last=False) -> Iterator[tuple[Tensor, Tensor]]:
        index = self.train_indices(epoch, seed=seed, rank=rank, world_size=world_size)
        seeds = torch.randint(0, 2**62, (len(index),), generator=generator(seed, epoch, rank, 2))
        loader, sampler = self._loader(self.train_set, batch_size, drop_last, device)
        sampler.items = list(zip(index.tolist(), seeds.tolist()))
        return self._iterate(loader, device)

    def test_batches(self, batch_size, *, device, rank=0, world_size=1, split="test"
                     ) -> Iterator[tuple[Tensor, Tensor]]:
        dataset = self.test_set if split == "test" else self.val_set
        loader, sampler = self._loader(dataset, batch_size, False, device)
        sampler.items = self.test_indices(rank, world_size, split).tolist()
        return self._iterate(loader, device)

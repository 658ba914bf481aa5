"""The dataset factories behind the built-in ``datasets`` plugin: ``f(cfg, *, imbalance)``."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from lt_bench.data import copies
from lt_bench.data.base import LongTailedData
from lt_bench.data.cache import cached, stat_key
from lt_bench.data.config import DataConfig, as_data_config, cache_dir
from lt_bench.data.encoding import source_encoding
from lt_bench.data.longtail import (
    check_imbalance,
    check_not_empty,
    hold_out_validation,
    make_long_tailed,
    refuse_empty_test,
)
from lt_bench.data.pipeline import (
    CIFAR_FIXED_MEAN,
    CIFAR_FIXED_STD,
    LoaderData,
    TensorData,
    channel_stats,
)
from lt_bench.data.sources import (
    CIFAR,
    class_names_from_paths,
    decode_files,
    decode_image_folder_tar,
    extract_tar,
    find_split,
    image_size,
    list_image_folder,
    read_cifar_pickle,
    read_file_list,
    read_inat_json,
)
from lt_bench.errors import LtBenchError

log = logging.getLogger(__name__)

SMALL = 64  # images at most this many pixels a side live on the device as uint8 tensors
TEST_SPLITS = ("test", "val")


def _with_stats(data: dict) -> dict:
    data["mean"], data["std"] = channel_stats(data["train_images"])
    return data


def _split(labels, classes, cfg: DataConfig, imbalance, source: str):
    """(train, val, meta) indices: the long-tailed subset, less the validation set and the meta
    set when asked for."""
    keep = make_long_tailed(labels, classes, imbalance, cfg.profile, cfg.subset_seed, source)
    val = meta = keep[:0]
    if cfg.val_per_class:
        keep, val = hold_out_validation(labels, keep, cfg.val_per_class, cfg.subset_seed,
                                        classes, source)
    if cfg.meta_per_class:
        keep, meta = hold_out_validation(labels, keep, cfg.meta_per_class, cfg.subset_seed,
                                         classes, source, taken=val,
                                         key="data.meta_per_class", salt=104729)
    return keep, val, meta


def _tensor_data(name: str, data: dict, cfg: DataConfig, imbalance, source: str) -> TensorData:
    keep, val, meta = _split(data["train_labels"], data["classes"], cfg, imbalance, source)
    fixed = cfg.normalize == "cifar_fixed"

    def make(train, **more):
        return TensorData(
            name, data["classes"], data["train_images"][train], data["train_labels"][train],
            data["test_images"], data["test_labels"],
            mean=CIFAR_FIXED_MEAN if fixed else data["mean"],
            std=CIFAR_FIXED_STD if fixed else data["std"],
            sampler=cfg.sampler, augment=cfg.augment, pad_mode=cfg.pad_mode, **more)

    out = make(keep, val_images=data["train_images"][val], val_labels=data["train_labels"][val])
    out.meta = make(meta) if len(meta) else None  # augmented as the training images are
    out.source_indices = keep
    return out


def _loader_data(name: str, classes, train_paths, train_labels, test_paths, test_labels,
                 cfg: DataConfig, imbalance, source: str) -> LoaderData:
    # The DataLoader pipeline crops at random scales (no padding) and uses ImageNet's
    # statistics: options of the CIFAR crop would silently do nothing here.
    for key in ("pad_mode", "normalize"):
        if getattr(cfg, key) != getattr(DataConfig, key):
            raise LtBenchError(
                f"data.{key}={getattr(cfg, key)} applies to small images kept as tensors "
                f"(CIFAR-LT, at most {SMALL} px), but {name} goes through the DataLoader "
                f"pipeline; remove data.{key} (or set data.pipeline=tensor)")
    keep, val, meta = _split(train_labels, classes, cfg, imbalance, source)

    def make(train, **more):
        return LoaderData(name, classes, [train_paths[i] for i in train.tolist()],
                          train_labels[train], test_paths, test_labels,
                          image_size=cfg.image_size, augment=cfg.augment, workers=cfg.workers,
                          sampler=cfg.sampler, **more)

    out = make(keep, val_paths=[train_paths[i] for i in val.tolist()],
               val_labels=train_labels[val])
    out.meta = make(meta) if len(meta) else None
    out.source_indices = keep
    return out


# -- CIFAR-10/100-LT --------------------------------------------------------------------------
def _locate_cifar(root: Path, variant: str, cfg: DataConfig) -> tuple[str, str, Path]:
    """(copy, kind, path) of the copy ``data.copy`` names (``lt_bench.data.copies``); with
    ``auto`` and none under ``root``, torchvision's pickles, downloaded when allowed."""
    found = copies.locate(root, variant, cfg.copy)
    if found is not None:
        return found
    pickled = CIFAR[variant]["folder"]
    where = (f"put {variant}-webp.tar.gz (lossless), {variant}-jpeg.tar.gz or torchvision's "
             f"{pickled} folder in {str(root)!r}, or point data.root at a folder holding one")
    if cfg.download == "false":
        raise LtBenchError(f"{variant} not found under data.root={str(root)!r} and "
                           f"data.download=false: {where}, or set data.download=auto")
    try:
        fetch_cifar(variant, root)
    except Exception as exc:
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        raise LtBenchError(f"{variant} not found under data.root={str(root)!r} and downloading "
                           f"it failed ({reason}): {where}") from None
    return "pickle", "pickle", root / pickled


def fetch_cifar(variant: str, root: Path) -> None:
    """torchvision's standard download of CIFAR-10/100 (python pickles) into ``root``."""
    import torchvision

    cls = torchvision.datasets.CIFAR10 if variant == "cifar10" else torchvision.datasets.CIFAR100
    print(f"lt-bench: {variant} not found under {root}: downloading it with torchvision "
          "(data.download=false turns this off)", flush=True)
    cls(str(root), train=True, download=True)
    cls(str(root), train=False, download=True)


def cifar_lt(cfg, *, imbalance: float | None, variant: str = "cifar10") -> TensorData:
    cfg = as_data_config(cfg)
    check_imbalance(imbalance)
    root = Path(cfg.root).expanduser()
    copy, kind, src = _locate_cifar(root, variant, cfg)
    if kind == "pickle":
        spec = CIFAR[variant]
        files = [src / f for f in spec["train"] + spec["test"] + [spec["meta"][0]]]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise LtBenchError(
                f"the pickled {variant} folder {src} lacks {', '.join(missing[:3])}; "
                "delete the folder and let data.download=auto fetch it again"
            )
        key, test_source = stat_key(files, variant, kind), str(src / spec["test"][0])

        def build():
            return _with_stats(read_cifar_pickle(src, variant))
    elif kind == "folder":
        train_dir, test_dir = src / "train", find_split(src, TEST_SPLITS)
        if test_dir is None:
            raise LtBenchError(f"{src} has train/ but no test/ (or val/) folder")
        dirs = [train_dir, test_dir, *sorted(p for d in (train_dir, test_dir) for p in d.iterdir())]
        key, test_source = stat_key(dirs, variant, kind), str(test_dir)

        def build():
            return _with_stats(_decode_folder(train_dir, test_dir, cfg.progress))
    else:
        key, test_source = stat_key([src], variant, kind), f"*/test/ (or */val/) of {src}"

        def build():
            return _with_stats(decode_image_folder_tar(src, cfg.progress))
    data = cached(cache_dir(cfg) / f"{variant}-{kind}-{key}.pt", build)
    out = _tensor_data(f"{variant}_lt", data, cfg, imbalance, str(src))
    out.test_source = test_source
    others = {c: p for c, (_, p) in copies.find_copies(root, variant).items() if c != copy}
    out.copy, out.encoding = copy, source_encoding(kind, src)
    out.source_line = copies.describe_copy(copy, src, out.encoding, others)
    return out


def _decode_folder(train_dir: Path, test_dir: Path, progress: bool,
                   size: tuple[int, int] | None = None) -> dict:
    train_paths, train_labels, classes = list_image_folder(train_dir)
    check_not_empty(torch.bincount(train_labels, minlength=len(classes)).tolist(), classes,
                    str(train_dir))
    test_paths, test_labels, _ = list_image_folder(test_dir, classes)
    train_images = decode_files(train_paths, size, progress, desc="decoding train")
    size = (train_images.shape[3], train_images.shape[2])
    test_images = decode_files(test_paths, size, progress, desc="decoding test")
    if not len(test_paths):
        test_images = torch.zeros(0, 3, size[1], size[0], dtype=torch.uint8)
    return {"classes": classes, "train_images": train_images, "train_labels": train_labels,
            "test_images": test_images, "test_labels": test_labels}


def cifar10_lt(cfg, *, imbalance: float | None = None) -> TensorData:
    return cifar_lt(cfg, imbalance=imbalance, variant="cifar10")


def cifar100_lt(cfg, *, imbalance: float | None = None) -> TensorData:
    return cifar_lt(cfg, imbalance=imbalance, variant="cifar100")


# -- generic ImageFolder ------------------------------------------------------------------------
def _folder_root(root: Path, cfg: DataConfig) -> Path:
    if root.is_file() and root.name.endswith((".tar.gz", ".tgz")):
        dest = cache_dir(cfg) / f"extract-{root.name.split('.')[0]}-{stat_key([root])}"
        root = extract_tar(root, dest, cfg.progress)
        subs = [p for p in root.iterdir() if p.is_dir()]
        if not (root / "train").is_dir() and len(subs) == 1:
            root = subs[0]
    if not (root / "train").is_dir() or find_split(root, TEST_SPLITS) is None:
        raise LtBenchError(
            f"image_folder_lt: data.root={str(root)!r} must hold train/<class>/<image> and "
            "test/<class>/<image> (or val/), or be a .tar.gz of such a tree"
        )
    return root


def _is_small(paths: Sequence[str], probe: int = 8) -> bool:
    sizes = {image_size(p) for p in paths[:probe]}
    return len(sizes) == 1 and max(next(iter(sizes))) <= SMALL


def image_folder_lt(cfg, *, imbalance: float | None = None) -> LongTailedData:
    cfg = as_data_config(cfg)
    check_imbalance(imbalance)
    root = _folder_root(Path(cfg.root).expanduser(), cfg)
    train_dir, test_dir = root / "train", find_split(root, TEST_SPLITS)
    train_paths, train_labels, classes = list_image_folder(train_dir)
    check_not_empty(torch.bincount(train_labels, minlength=len(classes)).tolist(), classes,
                    str(train_dir))
    test_paths, test_labels, _ = list_image_folder(test_dir, classes)
    refuse_empty_test(test_labels, str(test_dir))  # before any decoding
    tensor = cfg.pipeline == "tensor" or (cfg.pipeline == "auto" and _is_small(train_paths))
    if tensor:
        dirs = [train_dir, test_dir, *sorted(p for d in (train_dir, test_dir) for p in d.iterdir())]
        key = stat_key(dirs, len(train_paths), len(test_paths))
        data = cached(cache_dir(cfg) / f"folder-{root.name}-{key}.pt",
                      lambda: _with_stats(_decode_folder(train_dir, test_dir, cfg.progress)))
        out = _tensor_data("image_folder_lt", data, cfg, imbalance, str(train_dir))
    else:
        out = _loader_data("image_folder_lt", classes, train_paths, train_labels, test_paths,
                           test_labels, cfg, imbalance, str(train_dir))
    out.test_source = str(test_dir)
    return out


# -- naturally long-tailed sets: file lists and iNaturalist json ---------------------------------
def _natural(name: str, imbalance) -> None:
    if check_imbalance(imbalance) not in (None, 1.0):
        log.warning("%s is long-tailed already: imbalance=%s is ignored", name, imbalance)


def _list_path(root: Path, given: str | None, default: str, what: str, how: str) -> Path:
    path = Path(given or default).expanduser()
    path = path if path.is_absolute() else root / path
    if not path.is_file():
        raise LtBenchError(
            f"{what} {str(path)!r} not found (data.root={str(root)!r}); {how}"
        )
    return path


def _paths_data(name: str, classes, train_paths, train_labels, test_paths, test_labels,
                cfg: DataConfig, key_files: Sequence[Path]) -> LongTailedData:
    check_not_empty(torch.bincount(train_labels, minlength=len(classes)).tolist(), classes,
                    str(key_files[0]))
    refuse_empty_test(test_labels, str(key_files[1]))  # before any decoding
    if cfg.pipeline != "tensor":
        out = _loader_data(name, classes, train_paths, train_labels, test_paths, test_labels,
                           cfg, None, str(key_files[0]))
        out.test_source = str(key_files[1])
        return out
    digest = hashlib.sha1("\n".join(train_paths + test_paths).encode()).hexdigest()[:8]
    key = stat_key(key_files, digest)

    def build():
        train_images = decode_files(train_paths, None, cfg.progress, desc="decoding train")
        size = (train_images.shape[3], train_images.shape[2])
        test_images = decode_files(test_paths, size, cfg.progress, desc="decoding test")
        return _with_stats({"classes": list(classes), "train_images": train_images,
                            "train_labels": train_labels, "test_images": test_images,
                            "test_labels": test_labels})

    data = cached(cache_dir(cfg) / f"{name}-{key}.pt", build)
    out = _tensor_data(name, data, cfg, None, str(key_files[0]))
    out.test_source = str(key_files[1])
    return out


LISTS = {
    "imagenet_lt": ("ImageNet_LT_train.txt", "ImageNet_LT_test.txt", 1000),
    "places_lt": ("Places_LT_train.txt", "Places_LT_test.txt", 365),
}
LIST_HOW = ("the ImageNet-LT / Places-LT lists come with OLTR (github.com/zhmiao/"
            "OpenLongTailRecognition-OLTR); set data.root to the image folder and "
            "data.train_list / data.test_list to the lists")


def file_list_lt(cfg, *, imbalance: float | None = None, name: str = "imagenet_lt"
                 ) -> LongTailedData:
    cfg = as_data_config(cfg)
    _natural(name, imbalance)
    train_default, test_default, classes_default = LISTS[name]
    root = Path(cfg.root).expanduser()
    num_classes = cfg.num_classes or classes_default
    train_list = _list_path(root, cfg.train_list, train_default, f"{name} training list",
                            LIST_HOW)
    test_list = _list_path(root, cfg.test_list, test_default, f"{name} test list", LIST_HOW)
    train_paths, train_labels = read_file_list(train_list, root, num_classes)
    test_paths, test_labels = read_file_list(test_list, root, num_classes)
    classes = class_names_from_paths(train_paths, train_labels, num_classes)
    return _paths_data(name, classes, train_paths, train_labels, test_paths, test_labels, cfg,
                       [train_list, test_list])


def imagenet_lt(cfg, *, imbalance: float | None = None) -> LongTailedData:
    return file_list_lt(cfg, imbalance=imbalance, name="imagenet_lt")


def places_lt(cfg, *, imbalance: float | None = None) -> LongTailedData:
    return file_list_lt(cfg, imbalance=imbalance, name="places_lt")


def inat2018(cfg, *, imbalance: float | None = None) -> LongTailedData:
    cfg = as_data_config(cfg)
    _natural("inat2018", imbalance)
    root = Path(cfg.root).expanduser()
    how = ("download train2018.json / val2018.json and the images from the iNaturalist 2018 "
           "competition (github.com/visipedia/inat_comp) into data.root")
    train_json = _list_path(root, cfg.train_list, "train2018.json", "inat2018 training json", how)
    test_json = _list_path(root, cfg.test_list, "val2018.json", "inat2018 validation json", how)
    train_paths, train_labels, categories, names = read_inat_json(train_json, root)
    test_paths, test_labels, _, _ = read_inat_json(test_json, root, categories)
    return _paths_data("inat2018", names, train_paths, train_labels, test_paths, test_labels,
                       cfg, [train_json, test_json])

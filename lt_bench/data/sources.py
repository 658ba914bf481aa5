"""Reading the sources: pickled CIFAR, ImageFolder trees and their .tar.gz, file lists, iNat json.

Small images are decoded here into uint8 tensors ``[N, 3, H, W]``; large data sets are only
listed (paths and labels) and decoded later by the DataLoader workers.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import tarfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from lt_bench.errors import LtBenchError

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

CIFAR = {
    "cifar10": {
        "folder": "cifar-10-batches-py",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "meta": ("batches.meta", "label_names"),
        "labels": "labels",
    },
    "cifar100": {
        "folder": "cifar-100-python",
        "train": ["train"],
        "test": ["test"],
        "meta": ("meta", "fine_label_names"),
        "labels": "fine_labels",
    },
}


def _progress(iterable, enabled: bool, **kw):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, leave=False, dynamic_ncols=True, disable=None, **kw)  # None: no
    # carriage-return frames off a terminal


# -- pickled CIFAR ---------------------------------------------------------------------------
def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    except FileNotFoundError as exc:
        raise LtBenchError(
            f"{path} is missing: the pickled CIFAR folder is incomplete; re-download it "
            "(data.download=true) or point data.root elsewhere"
        ) from exc
    except Exception as exc:
        raise LtBenchError(f"{path} is not a readable CIFAR pickle ({exc}); re-download it") from exc


def read_cifar_pickle(folder: Path, variant: str) -> dict:
    """torchvision's pickled CIFAR-10/100 folder as uint8 tensors and int64 labels."""
    spec = CIFAR[variant]
    meta_file, meta_key = spec["meta"]
    classes = [str(c) for c in _unpickle(folder / meta_file)[meta_key]]
    out = {"classes": classes}
    for split in ("train", "test"):
        data, labels = [], []
        for name in spec[split]:
            entry = _unpickle(folder / name)
            data.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.extend(entry[spec["labels"]] if spec["labels"] in entry else entry["labels"])
        out[f"{split}_images"] = torch.from_numpy(np.concatenate(data)).contiguous()
        out[f"{split}_labels"] = torch.tensor(labels, dtype=torch.long)
        check_labels(out[f"{split}_labels"], len(classes), str(folder / spec[split][0]))
    return out


def check_labels(labels: torch.Tensor, num_classes: int, source: str) -> None:
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        bad = int(torch.nonzero((labels < 0) | (labels >= num_classes))[0])
        raise LtBenchError(
            f"{source}: label {int(labels[bad])} of image {bad} is outside 0…{num_classes - 1}"
        )


# -- decoding ----------------------------------------------------------------------------------
def decode(data: bytes | str | Path, name: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """One image as an RGB uint8 array ``[H, W, 3]`` (resized to ``size`` (W, H) if given)."""
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as img:
            img = img.convert("RGB")
            if size is not None and img.size != tuple(size):
                img = img.resize(tuple(size), Image.BILINEAR)
            return np.array(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise LtBenchError(
            f"corrupt or unreadable image {name}: {exc}; delete or replace the file"
        ) from exc


def decode_files(paths: Sequence[str | Path], size: tuple[int, int] | None = None,
                 progress: bool = True, desc: str = "decoding") -> torch.Tensor:
    """Decode images into one uint8 tensor ``[N, 3, H, W]`` (size: the first image's)."""
    if not paths:
        return torch.zeros(0, 3, 1, 1, dtype=torch.uint8)
    arrays = []
    for p in _progress(paths, progress and len(paths) > 1000, desc=desc, unit="img"):
        a = decode(p, str(p), size)
        if size is None:
            size = (a.shape[1], a.shape[0])
        arrays.append(a)
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def image_size(path: str | Path) -> tuple[int, int]:
    """(W, H) read from the file's header."""
    try:
        with Image.open(path) as img:
            return img.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise LtBenchError(f"corrupt or unreadable image {path}: {exc}") from exc


# -- ImageFolder trees -------------------------------------------------------------------------
def is_image(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS)


def list_image_folder(folder: Path, classes: Sequence[str] | None = None
                      ) -> tuple[list[str], torch.Tensor, list[str]]:
    """(sorted paths, labels, classes) of ``folder/<class>/*``; classes: sorted sub-folders.

    With ``classes`` given (the training split's), every sub-folder must be one of them.
    """
    found = sorted(e.name for e in os.scandir(folder) if e.is_dir())
    if classes is None:
        classes = found
        if not classes:
            raise LtBenchError(
                f"{folder} has no class sub-folders: expected {folder}/<class>/<image>"
            )
    else:
        extra = [c for c in found if c not in classes]
        if extra:
            raise LtBenchError(
                f"{folder} has class folder(s) {', '.join(extra[:5])} missing from the "
                "training split: both splits need the same classes"
            )
    index = {c: i for i, c in enumerate(classes)}
    paths, labels = [], []
    for c in found:
        files = sorted(e.path for e in os.scandir(folder / c) if e.is_file() and is_image(e.name))
        paths.extend(files)
        labels.extend([index[c]] * len(files))
    return paths, torch.tensor(labels, dtype=torch.long), list(classes)


def find_split(root: Path, names: Sequence[str]) -> Path | None:
    for n in names:
        if (root / n).is_dir():
            return root / n
    return None


# -- .tar.gz archives --------------------------------------------------------------------------
def decode_image_folder_tar(archive: Path, progress: bool = True) -> dict:
    """Decode ``*/train/<class>/*`` and ``*/test|val/<class>/*`` of an archive, streaming.

    The members are read in one pass over the gzip stream (no 60,000 small files on disk);
    images are ordered by path, as an extracted ImageFolder would list them.
    """
    splits: dict[str, list[tuple[str, str, bytes]]] = {"train": [], "test": []}
    try:
        with tarfile.open(archive, "r|gz") as tar:
            bar = _progress(tar, progress, desc=f"reading {archive.name}", unit="file")
            for member in bar:
                if not member.isfile() or not is_image(member.name):
                    continue
                parts = member.name.split("/")
                if len(parts) < 3:
                    continue
                split, cls = parts[-3], parts[-2]
                split = "test" if split == "val" else split
                if split not in splits:
                    continue
                data = tar.extractfile(member).read()
                splits[split].append((member.name, cls, data))
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise LtBenchError(f"{archive} is not a readable .tar.gz ({exc}); download it again") from exc
    if not splits["train"]:
        raise LtBenchError(
            f"{archive} holds no images under */train/<class>/: expected an ImageFolder archive"
        )
    classes = sorted({cls for _, cls, _ in splits["train"]})
    index = {c: i for i, c in enumerate(classes)}
    out: dict = {"classes": classes}
    for split, items in splits.items():
        items.sort(key=lambda t: t[0])
        missing = sorted({cls for _, cls, _ in items if cls not in index})
        if missing:
            raise LtBenchError(f"{archive}: {split} classes {missing[:5]} are not in train/")
        size = None
        arrays = []
        for name, _, data in _progress(items, progress, desc=f"decoding {split}", unit="img"):
            a = decode(data, f"{archive}:{name}", size)
            size = size or (a.shape[1], a.shape[0])
            arrays.append(a)
        images = np.stack(arrays) if arrays else np.zeros((0, 1, 1, 3), np.uint8)
        out[f"{split}_images"] = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
        out[f"{split}_labels"] = torch.tensor([index[c] for _, c, _ in items], dtype=torch.long)
    return out


def extract_tar(archive: Path, dest: Path, progress: bool = True) -> Path:
    """Extract ``archive`` once into ``dest`` (temp folder + rename); return ``dest``."""
    if dest.is_dir():
        return dest
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = [m for m in tar.getmembers() if m.isfile() or m.isdir()]
            for m in members:
                if m.name.startswith("/") or ".." in Path(m.name).parts:
                    raise LtBenchError(f"{archive}: unsafe member path {m.name!r}")
            for m in _progress(members, progress, desc=f"extracting {archive.name}", unit="file"):
                tar.extract(m, tmp)
        os.replace(tmp, dest)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise LtBenchError(f"{archive} could not be extracted ({exc}); download it again") from exc
    finally:
        if tmp.exists():
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return dest


# -- file lists (ImageNet-LT, Places-LT) ---------------------------------------------------------
def read_file_list(list_path: Path, root: Path, num_classes: int
                   ) -> tuple[list[str], torch.Tensor]:
    """``path label`` per line: (paths, labels), a relative path under ``root``, an absolute one
    as it is; labels checked per line."""
    paths, labels = [], []
    with open(list_path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            rel, _, label = line.rpartition(" ")
            rel = rel.strip()
            try:
                y = int(label)
            except ValueError:
                rel = ""
            if not rel:
                raise LtBenchError(
                    f"{list_path}, line {lineno}: expected 'relative/path label', got {line!r}"
                )
            if not 0 <= y < num_classes:
                raise LtBenchError(
                    f"{list_path}, line {lineno}: label {y} is outside the class range "
                    f"0…{num_classes - 1} (set data.num_classes if the list has more classes)"
                )
            paths.append(str(root / rel))  # an absolute path stays as it is
            labels.append(y)
    return paths, torch.tensor(labels, dtype=torch.long)


def class_names_from_paths(paths: Sequence[str], labels: torch.Tensor, num_classes: int
                           ) -> list[str]:
    """Each label's name: the parent folder of its first image, else the label number."""
    names = [str(c) for c in range(num_classes)]
    seen = set()
    for p, y in zip(paths, labels.tolist()):
        if y not in seen:
            seen.add(y)
            names[y] = Path(p).parent.name or str(y)
    if len(set(names)) != len(names):  # folders do not identify classes: use the numbers
        names = [str(c) for c in range(num_classes)]
    return names


# -- iNaturalist 2018 (COCO-style json) -----------------------------------------------------------
def read_inat_json(json_path: Path, root: Path, categories: list[int] | None = None
                   ) -> tuple[list[str], torch.Tensor, list[int], list[str]]:
    """(paths, labels, category ids, category names) of a COCO-style iNat json.

    Labels index the sorted category ids of the json (or ``categories`` from the training
    json, so that the validation json uses the same labels).
    """
    try:
        with open(json_path, encoding="utf-8") as f:
            doc = json.load(f)
        images = {im["id"]: im["file_name"] for im in doc["images"]}
        annotations = doc["annotations"]
        cats = {c["id"]: str(c.get("name", c["id"])) for c in doc.get("categories", [])}
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise LtBenchError(
            f"{json_path} is not an iNaturalist json (needs images, annotations, categories): "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if categories is None:
        categories = sorted(cats) or sorted({a["category_id"] for a in annotations})
    names = [cats.get(c, str(c)) for c in categories]
    index = {c: i for i, c in enumerate(categories)}
    paths, labels = [], []
    for k, ann in enumerate(annotations):
        cid = ann.get("category_id")
        if cid not in index:
            raise LtBenchError(
                f"{json_path}: annotation {k} (image {ann.get('image_id')}) has category_id "
                f"{cid!r}, not among the {len(categories)} categories"
            )
        if ann.get("image_id") not in images:
            raise LtBenchError(
                f"{json_path}: annotation {k} refers to image_id {ann.get('image_id')!r}, "
                "which is not in 'images'"
            )
        paths.append(str(root / images[ann["image_id"]]))
        labels.append(index[cid])
    return paths, torch.tensor(labels, dtype=torch.long), categories, names

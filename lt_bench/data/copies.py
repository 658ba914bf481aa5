"""Which copy of CIFAR a run reads: torchvision's pickles, a lossless WebP export or a lossy JPEG
export, as a folder or a ``.tar.gz`` under ``data.root`` (no torch import: the config resolves
the copy before anything loads).

The copies hold the same images under the same names, but not the same pixels: a JPEG export
has lost detail, so a run on it is another experiment. The copy is therefore part of a run's
identity (its config hash): ``data.copy=auto`` is resolved, when the config is loaded, to the
copy found under ``data.root``, the lossless ones first (``PREFERENCE``), and written into the
config, so that runs, trunks and checkpoints of two copies never share a folder.
"""

from __future__ import annotations

from pathlib import Path

from lt_bench.errors import LtBenchError, closest

#: every copy a CIFAR loader reads; ``auto`` takes the first found, lossless first
PREFERENCE = ("pickle", "webp", "jpeg")
COPIES = ("auto", *PREFERENCE)
LOSSLESS = ("pickle", "webp")
#: the built-in data sets that read these copies, with their CIFAR variant
CIFAR_DATASETS = {"cifar10_lt": "cifar10", "cifar100_lt": "cifar100"}
PICKLED = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}


def export_name(variant: str, copy: str) -> str:
    """The folder (and archive stem) of an export: ``cifar10-webp``, ``cifar100-jpeg``."""
    return f"{variant}-{copy}"


def find_copies(root: Path, variant: str) -> dict[str, tuple[str, Path]]:
    """The copies under ``root`` (or ``root`` itself being one): copy → (kind, path), kind
    ``pickle`` | ``folder`` | ``tar``, in ``PREFERENCE`` order. A folder wins over its archive."""
    root = Path(root).expanduser()
    found: dict[str, tuple[str, Path]] = {}
    pickled = PICKLED[variant]
    for folder in (root, root / pickled):
        if folder.name == pickled and folder.is_dir():
            found["pickle"] = ("pickle", folder)
            break
    for copy in PREFERENCE[1:]:
        name = export_name(variant, copy)
        for folder in (root, root / name):
            if folder.name == name and (folder / "train").is_dir():
                found.setdefault(copy, ("folder", folder))
        archive = root / f"{name}.tar.gz"
        for path in (root, archive):
            if path.name == f"{name}.tar.gz" and path.is_file():
                found.setdefault(copy, ("tar", path))
    return {c: found[c] for c in PREFERENCE if c in found}


def resolve_copy(root: Path, variant: str, asked: str) -> str:
    """The copy ``asked`` means under ``root``: itself, or for ``auto`` the first found (still
    ``auto`` when there is none: the loader then downloads torchvision's pickles)."""
    check_copy(asked)
    if asked != "auto":
        return asked
    found = find_copies(root, variant)
    return next(iter(found), "auto")


def locate(root: Path, variant: str, copy: str) -> tuple[str, str, Path] | None:
    """(copy, kind, path) of the copy to read, or None when ``auto`` finds none. A named copy
    that is absent is an error naming the copies that are there."""
    found = find_copies(root, variant)
    if copy == "auto":
        return next(((c, *found[c]) for c in found), None)
    if copy in found:
        return (copy, *found[copy])
    there = ", ".join(f"{c} ({p.name})" for c, (_, p) in found.items()) or "none"
    where = PICKLED[variant] if copy == "pickle" else f"{export_name(variant, copy)}.tar.gz"
    raise LtBenchError(
        f"data.copy={copy} but {where} is not under data.root={str(root)!r} (copies there: "
        f"{there}); put it there, or set data.copy to one that is (auto takes the lossless "
        "one first)")


def check_copy(copy) -> str:
    if copy not in COPIES:
        raise LtBenchError(f"data.copy={copy!r} is not valid{closest(str(copy), COPIES)}; choose "
                           f"one of: {', '.join(COPIES)}")
    return copy


def describe_copy(copy: str, path: Path, encoding: str, others: dict[str, Path]) -> str:
    """The one line a run says about the pixels it trains on."""
    what = {"pickle": "torchvision's pickled batches", "webp": "a WebP export",
            "jpeg": "a JPEG export"}[copy]
    line = f"data: {path.name}, {what} (pixels: {encoding}; data.copy={copy})"
    if others:
        line += "; also under data.root: " + ", ".join(
            f"{p.name} (data.copy={c})" for c, p in others.items())
    return line

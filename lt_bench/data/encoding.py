"""How an image file was encoded: lossless (PNG, WebP lossless, the pickled batches) or JPEG with
its quality and chroma subsampling. A run records it (``data_encoding`` in its provenance) so
that "my numbers differ from the paper's" can be checked against "my pixels differ".

The JPEG quality is read from the luminance quantisation table against the IJG (libjpeg)
standard table scaled to each quality: exact for files that encoder wrote, "~q" (the nearest)
for others.
"""

from __future__ import annotations

import collections
import io
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from lt_bench.data.copies import CIFAR_DATASETS, find_copies

# The IJG luminance table at quality 50, row-major, the order PIL gives the tables in.
IJG_LUMINANCE = (
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
)
SAMPLING = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}
SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
LOSSLESS = "lossless"


def ijg_table(quality: int) -> list[int]:
    """The luminance table libjpeg writes at ``quality`` (its scaling rule)."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return [min(255, max(1, (q * scale + 50) // 100)) for q in IJG_LUMINANCE]


IJG_TABLES = {q: ijg_table(q) for q in range(1, 101)}  # once, not once an image


def quality_of(luminance: list[int]) -> str:
    """The IJG quality whose table this is, or the nearest with a '~' when none is exact."""
    for q, table in IJG_TABLES.items():
        if table == list(luminance):
            return str(q)
    nearest = min(IJG_TABLES,
                  key=lambda q: sum(abs(a - b) for a, b in zip(IJG_TABLES[q], luminance)))
    return f"~{nearest}"


def webp_is_lossless(data: bytes) -> bool | None:
    """True for a lossless WebP (a ``VP8L`` bitstream), False for a lossy one (``VP8 ``), None
    when the RIFF chunks do not say."""
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    at = 12
    while at + 8 <= len(data):
        tag, size = data[at:at + 4], int.from_bytes(data[at + 4:at + 8], "little")
        if tag == b"VP8L":
            return True
        if tag == b"VP8 ":
            return False
        at += 8 + size + (size & 1)  # chunks are padded to an even length
    return None


def encoding_of(data: bytes) -> tuple[str, str]:
    """(format and quality, chroma subsampling or ``lossless``) of one image file's bytes."""
    from PIL import Image, JpegImagePlugin

    image = Image.open(io.BytesIO(data))
    if image.format == "WEBP":
        lossless = webp_is_lossless(data)
        return "WebP", {True: LOSSLESS, False: "lossy", None: "-"}[lossless]
    if image.format != "JPEG":
        return image.format or "unknown", LOSSLESS if image.format in ("PNG", "BMP") else "-"
    tables = getattr(image, "quantization", None) or {}
    quality = quality_of(list(tables[0])) if 0 in tables else "unknown"
    sampling = SAMPLING.get(JpegImagePlugin.get_sampling(image), "grey or other")
    return f"JPEG quality {quality}", sampling


def short_encoding(kind: tuple[str, str]) -> str:
    """``lossless`` or ``jpeg q75 4:2:0``: how a set-up line names an encoding."""
    fmt, sampling = kind
    if sampling == LOSSLESS:
        return LOSSLESS
    if fmt.startswith("JPEG quality "):
        return f"jpeg q{fmt[len('JPEG quality '):]} {sampling}"
    return f"{fmt.lower()} {sampling}".strip()


def image_bytes(path: Path, sample: int) -> Iterator[bytes]:
    """Up to ``sample`` image files' bytes of a folder (sorted) or an archive (in its order)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in SUFFIXES)
        for p in files[:sample]:
            yield p.read_bytes()
        return
    with tarfile.open(path, "r|*") as tar:
        n = 0
        for member in tar:
            if member.isfile() and member.name.lower().endswith(SUFFIXES):
                yield tar.extractfile(member).read()
                n += 1
                if n >= sample:
                    return


def tally(files: Iterable[bytes]) -> tuple[collections.Counter, list[int]]:
    """(how many files of each encoding, their sizes)."""
    kinds: collections.Counter = collections.Counter()
    sizes = []
    for data in files:
        kinds[encoding_of(data)] += 1
        sizes.append(len(data))
    return kinds, sizes


def source_encoding(kind: str, path: Path, sample: int = 32) -> str:
    """The encoding of a CIFAR copy (``lt_bench.data.copies``) from its first ``sample`` files:
    ``lossless``, ``jpeg q75 4:2:0``, or ``mixed: …`` when they disagree."""
    if kind == "pickle":
        return LOSSLESS
    try:
        kinds, _ = tally(image_bytes(path, sample))
    except (OSError, tarfile.TarError, EOFError) as exc:
        return f"unknown ({type(exc).__name__})"
    names = sorted({short_encoding(k) for k in kinds})
    if not names:
        return "unknown (no image files)"
    return names[0] if len(names) == 1 else "mixed: " + ", ".join(names)


def pixels_of(cfg) -> str:
    """The encoding of the copy a run config reads (a study's ``pixels`` set-up item), from its
    files where they are, else what the copy's name says."""
    variant = CIFAR_DATASETS.get(cfg.dataset)
    if variant is None:
        return "(not known for this data set)"
    copy = cfg.data["copy"]
    found = find_copies(Path(cfg.data.root), variant)
    if copy in found:
        return source_encoding(*found[copy])
    return {"pickle": LOSSLESS, "webp": LOSSLESS, "jpeg": "jpeg"}.get(copy, "(no copy found)")

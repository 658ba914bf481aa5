"""How lossy is an image archive? The JPEG quality and chroma subsampling of its images.

Published CIFAR numbers come from the lossless original (the pickled batches). A JPEG export of
CIFAR is a different data set: every image has lost detail, and its colour may be stored at half
resolution. This reads an ImageFolder ``.tar.gz`` (or a folder) and reports, over a sample of its
images, the quality each was encoded at (estimated from its quantisation tables against the
IJG/libjpeg standard tables, exact for files that encoder wrote), the chroma subsampling and the
mean file size, so that "my numbers differ from the paper's" can be checked against "my pixels
differ from the paper's".

    python benchmarks/jpeg_encoding.py ../shared/data/cifar10-jpeg.tar.gz [--sample 2000]
"""
from __future__ import annotations

import argparse
import collections
import io
import sys
import tarfile
from pathlib import Path

# The IJG (libjpeg) luminance table at quality 50, in natural (row-major) order; PIL returns the
# tables in the same order.
IJG_LUMINANCE = (
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
)
SAMPLING = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}


def ijg_table(quality: int) -> list[int]:
    """The luminance table libjpeg writes at ``quality`` (its scaling rule)."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return [min(255, max(1, (q * scale + 50) // 100)) for q in IJG_LUMINANCE]


IJG_TABLES = {q: ijg_table(q) for q in range(1, 101)}  # once, not once an image


def quality_of(luminance: list[int]) -> str:
    """The IJG quality whose table this is, or the nearest with a '~' when none is exact."""
    tables = IJG_TABLES
    for q, table in tables.items():
        if table == list(luminance):
            return str(q)
    nearest = min(tables, key=lambda q: sum(abs(a - b) for a, b in zip(tables[q], luminance)))
    return f"~{nearest}"


def encoding_of(data: bytes) -> tuple[str, str]:
    """(format and quality, chroma subsampling) of one image file's bytes."""
    from PIL import Image, JpegImagePlugin

    image = Image.open(io.BytesIO(data))
    if image.format != "JPEG":
        return image.format or "unknown", "lossless" if image.format == "PNG" else "-"
    tables = getattr(image, "quantization", None) or {}
    quality = quality_of(list(tables[0])) if 0 in tables else "unknown"
    sampling = SAMPLING.get(JpegImagePlugin.get_sampling(image), "grey or other")
    return f"JPEG quality {quality}", sampling


def image_bytes(path: Path, sample: int):
    """Up to ``sample`` image files' bytes: every one of a folder's or an archive's, in order."""
    suffixes = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in suffixes)
        for p in files[:sample]:
            yield p.read_bytes()
        return
    with tarfile.open(path, "r|*") as tar:
        n = 0
        for member in tar:
            if member.isfile() and member.name.lower().endswith(suffixes):
                yield tar.extractfile(member).read()
                n += 1
                if n >= sample:
                    return


def report(path: Path, sample: int) -> str:
    kinds: collections.Counter = collections.Counter()
    sizes = []
    for data in image_bytes(path, sample):
        kinds[encoding_of(data)] += 1
        sizes.append(len(data))
    if not sizes:
        return f"{path}: no image files found"
    lines = [f"{path}: {len(sizes)} images read, {sum(sizes) / len(sizes):.0f} bytes each on "
             f"average"]
    for (kind, sampling), n in kinds.most_common():
        lines.append(f"  {n:6d}  {kind}, chroma {sampling}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path, help="an ImageFolder .tar.gz, or a folder of images")
    parser.add_argument("--sample", type=int, default=2000,
                        help="read at most this many images, in archive order (default 2000)")
    args = parser.parse_args(argv)
    if not args.path.exists():
        print(f"jpeg_encoding: {args.path} does not exist; give an archive or a folder",
              file=sys.stderr)
        return 2
    try:
        print(report(args.path, args.sample))
    except (tarfile.TarError, OSError) as exc:
        print(f"jpeg_encoding: {args.path} could not be read ({exc})", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

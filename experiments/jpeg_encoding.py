"""How lossy is an image archive? The JPEG quality and chroma subsampling of its images.

Published CIFAR numbers come from the lossless original (the pickled batches). A JPEG export of
CIFAR is a different data set: every image has lost detail, and its colour may be stored at half
resolution. This reads an ImageFolder ``.tar.gz`` (or a folder) and reports, over a sample of its
images, the quality each was encoded at (estimated from its quantisation tables against the
IJG/libjpeg standard tables, exact for files that encoder wrote), the chroma subsampling and the
mean file size, so that "my numbers differ from the paper's" can be checked against "my pixels
differ from the paper's".

    python experiments/jpeg_encoding.py ../shared/data/cifar10-jpeg.tar.gz [--sample 2000]
"""
from __future__ import annotations

import argparse
import sys
import tarfile
from pathlib import Path

from lt_bench.data.encoding import encoding_of, ijg_table, image_bytes, tally  # noqa: F401


def report(path: Path, sample: int) -> str:
    kinds, sizes = tally(image_bytes(path, sample))
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

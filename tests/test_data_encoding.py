"""experiments/jpeg_encoding.py: the quality and chroma subsampling a file was written with are
read back from its quantisation tables (the encoder's settings are the truth here)."""
import io
import tarfile

import numpy as np
import pytest
from PIL import Image

from experiments.jpeg_encoding import encoding_of, ijg_table, main, report


def encoded(fmt="JPEG", **options) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, fmt, **options)
    return out.getvalue()


@pytest.mark.parametrize("quality, subsampling, name", [(75, 2, "4:2:0"), (95, 0, "4:4:4"),
                                                         (30, 1, "4:2:2")])
def test_quality_and_subsampling_come_back(quality, subsampling, name):
    data = encoded(quality=quality, subsampling=subsampling)
    assert encoding_of(data) == (f"JPEG quality {quality}", name)


def test_the_standard_tables():
    assert ijg_table(50)[:4] == [16, 11, 10, 16]  # quality 50 is the table itself
    assert ijg_table(75)[:4] == [8, 6, 5, 8]  # half of it, rounded
    assert ijg_table(100) == [1] * 64


def test_a_png_is_lossless_and_an_archive_is_summarised(tmp_path, capsys):
    assert encoding_of(encoded("PNG")) == ("PNG", "lossless")
    archive = tmp_path / "a.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for i, data in enumerate([encoded(quality=75)] * 3 + [encoded("PNG")]):
            info = tarfile.TarInfo(f"x/train/c/{i}.{'png' if i == 3 else 'jpg'}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    text = report(archive, sample=10)
    assert "4 images read" in text
    assert "3  JPEG quality 75, chroma 4:2:0" in text and "1  PNG, chroma lossless" in text
    assert main([str(tmp_path / "missing.tar.gz")]) == 2
    assert "does not exist" in capsys.readouterr().err

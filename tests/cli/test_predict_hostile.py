"""``streamer predict`` with untrusted images: refused from the header, one line each.

Issue 21, point 6 (image bombs: a 30000x30000 grey PNG of 875 KB took 5.4 GB; a
631-byte truncated JPEG declaring 30000x30000 was accepted; over 2^30 pixels a cv2.error
traceback stopped the good images after it) and point 11 (GIF/TIFF pages after the
first dropped without a word; one pixel cap for videos and images). Images are built
here with numpy, zlib and Pillow.
"""

from __future__ import annotations

import io
import json
import logging
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from streamer.cli import main


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(path: Path, width: int, height: int, rows: int | None = None) -> Path:
    """A grey 8-bit PNG of zeros: the whole picture, or only ``rows`` rows of it (a file
    whose header declares far more than it holds)."""
    z = zlib.compressobj(9)
    row = b"\0" * (width + 1)  # filter byte + pixels
    body = b"".join(z.compress(row) for _ in range(height if rows is None else rows))
    body += z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")
    )
    return path


def jpeg_declaring(path: Path, width: int, height: int, keep: int = 631) -> Path:
    """A small real JPEG whose frame header is patched to ``width`` x ``height``, cut to
    ``keep`` bytes."""
    buf = io.BytesIO()
    Image.fromarray(np.full((16, 16), 128, np.uint8)).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(data[:keep]))
    return path


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[dict[str, Any]], str]:
    rc = main(["predict", *args])
    out, err = capsys.readouterr()
    return rc, [json.loads(line) for line in out.splitlines() if line.strip()], err


def test_a_decompression_bomb_is_refused_from_its_header(
    models: None,
    store_path: Callable[[str], Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A real bomb: 9000x9000 zeros (81 MP, over the 67 MP cap) in about 80 KB."""
    bomb = png_bomb(tmp_path / "bomb.png", 9000, 9000)
    assert bomb.stat().st_size < 200_000
    rc, recs, err = _run(capsys, str(bomb), str(store_path("single_face.jpg")))
    assert rc == 1
    assert f"{bomb}: 9000x9000 (81,000,000 pixels), over the pixel cap of 67,108,864" in err
    assert "not decoded" in err and "Traceback" not in err
    assert [r["file"] for r in recs] == [str(store_path("single_face.jpg"))]


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("png-30000", lambda p: png_bomb(p, 30_000, 30_000, rows=10)),
        ("jpeg-30000-631-bytes", lambda p: jpeg_declaring(p, 30_000, 30_000)),
        ("png-over-2^30", lambda p: png_bomb(p, 40_000, 30_000, rows=10)),
    ],
)
def test_one_bad_image_never_stops_the_others(
    models: None,
    store_path: Callable[[str], Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    make: Callable[[Path], Path],
) -> None:
    """Over 2^30 pixels a cv2.error traceback ended the call before the good images."""
    bad = make(tmp_path / (name + (".png" if name.startswith("png") else ".jpg")))
    good = [str(store_path("single_face.jpg")), str(store_path("multi_face.jpg"))]
    rc, recs, err = _run(capsys, good[0], str(bad), good[1])
    assert rc == 1
    assert {r["file"] for r in recs} == set(good)
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 2, err  # the image, then the count
    assert str(bad) in lines[0] and "over the pixel cap" in lines[0]
    assert "1 image(s) could not be read" in lines[1]


def test_a_truncated_image_is_an_error_naming_it(
    models: None,
    store_path: Callable[[str], Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """It was accepted as a valid image (only libjpeg's raw line was printed)."""
    data = store_path("single_face.jpg").read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 2])
    rc, recs, err = _run(capsys, str(cut))
    assert rc == 1 and recs == []
    assert f"error: {cut}: not a readable image (image file is truncated" in err


def _pages(path: Path, first: np.ndarray, fmt: str) -> Path:
    blank = [np.full(first.shape, grey, np.uint8) for grey in (40, 200)]  # no face
    pages = [Image.fromarray(first), *(Image.fromarray(b) for b in blank)]
    pages[0].save(path, fmt, save_all=True, append_images=pages[1:])
    return path


@pytest.mark.parametrize("fmt", ["TIFF", "GIF"])
def test_multi_page_images_say_which_page_is_used(
    models: None,
    store_path: Callable[[str], Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    fmt: str,
) -> None:
    face = np.asarray(Image.open(store_path("single_face.jpg")).convert("RGB"))
    path = _pages(tmp_path / f"pages.{fmt.lower()}", face, fmt)
    caplog.set_level(logging.INFO, logger="streamer.cli.predict")
    rc, recs, _ = _run(capsys, str(path))
    assert rc == 0 and len(recs) == 1  # the face of the first page
    said = [r.getMessage() for r in caplog.records]
    assert f"{path}: {fmt} with 3 pages or frames; the first is used" in said


def test_the_pixel_cap_is_one_flag_for_images_and_videos(
    models: None,
    store_path: Callable[[str], Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    image, video = store_path("single_face.jpg"), store_path("single_face.mp4")
    rc, recs, err = _run(capsys, "--max-pixels", "100000", str(image))
    assert rc == 1 and recs == []
    assert f"{image}: 572x562 (321,464 pixels), over the pixel cap of 100,000" in err
    rc = main(["-q", "replay", "--max-pixels", "100000", str(video), "--out", "/dev/null"])
    err = capsys.readouterr().err
    assert rc == 1 and "over the pixel cap of 100,000 (--max-pixels)" in err

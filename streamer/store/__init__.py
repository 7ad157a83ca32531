"""Model store: a sha256-pinned manifest, a local cache, and explicit fetching.

Nothing is downloaded implicitly: :meth:`ModelStore.path` either returns a verified
cached file or raises :class:`ModelMissingError` holding the exact command that fetches
it. Fetching (``streamer models fetch``) tries the offline mirror folders named by
``$STREAMER_MODEL_MIRROR`` first, then the manifest's sources in order.

    store = default_store()
    onnx_path = store.path("yunet")

Where things are (:func:`default_store`):

- the manifest ships inside the package (``streamer/store/manifest.toml``), so an
  installed wheel knows what to fetch; ``$STREAMER_MODELS_DIR`` names another folder
  holding a ``manifest.toml`` (and, unless said otherwise, its ``cache/``);
- the cache (what ``models fetch`` writes, and the derived ONNX graphs and TensorRT
  engines) is ``$STREAMER_CACHE_DIR``, else ``models/cache`` in a source checkout, else
  ``$XDG_DATA_HOME/streamer/models`` (``~/.local/share/streamer/models``);
- ``$STREAMER_MODEL_BUNDLE`` names read-only folders of artifacts verified earlier (a
  container image's, fetched at build time): looked up after the cache, checked the
  same way, never written. An image upgrade brings its own bundle, so a data volume
  that outlives the image never holds stale models the new manifest would refuse.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from streamer.errors import ChecksumError, ModelMissingError, StoreError
from streamer.store.fetch import (
    MIB,
    archive_kind,
    copy_limited,
    extract_member,
    obtain,
    sha256_file,
)
from streamer.store.manifest import Artifact, Source, load_manifest

__all__ = ["Artifact", "ArtifactStatus", "ArtifactStore", "ModelStore", "Source", "default_store"]

logger = logging.getLogger(__name__)

MIRROR_ENV = "STREAMER_MODEL_MIRROR"
MODELS_DIR_ENV = "STREAMER_MODELS_DIR"
CACHE_DIR_ENV = "STREAMER_CACHE_DIR"
BUNDLE_ENV = "STREAMER_MODEL_BUNDLE"
PACKAGED_MANIFEST = Path(__file__).with_name("manifest.toml")
RECORDED = "recorded-sha256.json"
CACHED_FILE_MODE = 0o644  # a verified artifact in the cache: everyone may read it
# Files up to this size are re-hashed on every lookup; larger ones trust the stamp.
REHASH_MAX_BYTES = 64 << 20
ARCHIVE_FACTOR = 4  # an archive given to `add` may be this many times the member's cap


@dataclass(frozen=True)
class ArtifactStatus:
    artifact: Artifact
    cached: bool
    path: Path
    sha256: str  # expected (manifest or recorded), "" if unknown


def checkout_models_dir(package_dir: Path | None = None) -> Path | None:
    """The source checkout's ``models/`` folder when the package runs from a checkout
    (``pyproject.toml`` and ``models/`` beside the ``streamer`` folder), else None (an
    installed wheel)."""
    root = (package_dir or Path(__file__).resolve().parents[1]).parent
    if (root / "pyproject.toml").is_file() and (root / "models").is_dir():
        return root / "models"
    return None


def default_cache_dir(package_dir: Path | None = None) -> Path:
    """Where fetched artifacts go: ``$STREAMER_CACHE_DIR``, else a checkout's
    ``models/cache``, else ``$XDG_DATA_HOME/streamer/models``."""
    if env := os.environ.get(CACHE_DIR_ENV):
        return Path(env).expanduser()
    if (checkout := checkout_models_dir(package_dir)) is not None:
        return checkout / "cache"
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home).expanduser() / "streamer" / "models"


class ArtifactStore(Protocol):
    """What the running pipeline needs from a model store (:class:`ModelStore` is one;
    tests may pass a folder-backed fake)."""

    @property
    def derived_dir(self) -> Path:
        """Folder for files derived from artifacts (ONNX graphs, TensorRT engines)."""
        ...

    def has(self, name: str) -> bool:
        """True when the artifact ``name`` is in the store and verified."""
        ...

    def path(self, name: str) -> Path:
        """The verified file of ``name``; raises ModelMissingError when absent."""
        ...


class ModelStore:
    """A manifest plus a cache folder of verified artifacts.

    Args:
        models_dir: folder of ``manifest.toml`` (unless ``manifest_path`` is given) and of
            the default cache (``models_dir/cache``).
        cache_dir: the writable cache (fetched artifacts, derived files).
        mirrors: offline mirror folders ``fetch`` tries first.
        bundles: read-only folders of verified artifacts (file plus ``.sha256`` stamp, as
            in a cache), looked up after the cache and never written.
        manifest_path: the manifest, when not in ``models_dir``.
    """

    def __init__(
        self,
        models_dir: Path,
        cache_dir: Path | None = None,
        mirrors: list[Path] | None = None,
        bundles: list[Path] | None = None,
        manifest_path: Path | None = None,
    ) -> None:
        self.models_dir = Path(models_dir)
        self.manifest_path = manifest_path or self.models_dir / "manifest.toml"
        self.manifest = load_manifest(self.manifest_path)
        self.cache_dir = Path(cache_dir) if cache_dir else self.models_dir / "cache"
        self.mirrors = list(mirrors or [])
        self.bundles = list(bundles or [])

    # -- lookup ------------------------------------------------------------------------
    @property
    def derived_dir(self) -> Path:
        """Folder for files derived from artifacts (ONNX graphs, TensorRT engines)."""
        d = self.cache_dir / "derived"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def artifact(self, name: str) -> Artifact:
        try:
            return self.manifest[name]
        except KeyError:
            known = ", ".join(sorted(self.manifest))
            raise StoreError(f"unknown artifact {name!r} (known: {known})") from None

    def cached_path(self, name: str) -> Path:
        return self.cache_dir / self.artifact(name).file

    def expected_sha256(self, name: str) -> str:
        art = self.artifact(name)
        return art.sha256 or self._recorded().get(name, "")

    def has(self, name: str) -> bool:
        try:
            self.path(name)
        except (ModelMissingError, ChecksumError):
            return False
        return True

    def path(self, name: str) -> Path:
        """The verified file of ``name``: the cache's, else a bundle's.

        Raises:
            ModelMissingError: in neither; the message holds the fetch command.
            ChecksumError: present but altered since it was verified.
        """
        for folder in (self.cache_dir, *self.bundles):
            p = folder / self.artifact(name).file
            stamp = p.with_name(p.name + ".sha256")
            if p.is_file() and stamp.is_file():
                return self._verified(name, p, stamp)
        p = self.cached_path(name)
        raise ModelMissingError(
            f"model {name!r} is not in the store ({p}); fetch it with: "
            f"streamer models fetch {name}"
            + (
                f"  (or add a file you have: streamer models add {name} PATH)"
                if name == "facechannel"
                else ""
            )
        )

    def _verified(self, name: str, p: Path, stamp: Path) -> Path:
        expected = self.expected_sha256(name) or stamp.read_text().strip()
        if p.stat().st_size <= REHASH_MAX_BYTES:
            actual = sha256_file(p)
        else:
            actual = stamp.read_text().strip()
        if actual != expected:
            raise ChecksumError(
                f"{p}: sha256 {actual} does not match {expected}; "
                f"re-fetch it with: streamer models fetch --force {name}"
            )
        return p

    def locate(self, name: str) -> Path:
        """Where ``name`` is or would be: the verified file when present (the cache's or
        a bundle's), else its place in the cache."""
        try:
            return self.path(name)
        except (ModelMissingError, ChecksumError):
            return self.cached_path(name)

    def status(self) -> list[ArtifactStatus]:
        out = []
        for name, art in self.manifest.items():
            out.append(
                ArtifactStatus(art, self.has(name), self.locate(name), self.expected_sha256(name))
            )
        return out

    # -- fetching ----------------------------------------------------------------------
    def fetch(self, name: str, *, force: bool = False) -> Path:
        """Obtain ``name`` (mirror first, then its sources), verify it, cache it."""
        art = self.artifact(name)
        if not force and self.has(name):
            return self.path(name)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        errors: list[str] = []
        for label, produce in self._candidates(art):
            try:
                return self._install(art, produce, origin=label)
            except ChecksumError:
                raise
            except StoreError as err:
                errors.append(f"{label}: {err}")
                logger.warning("%s: %s", name, err)
        hint = f" (set ${MIRROR_ENV} to a folder holding {art.file})"
        raise StoreError(f"could not fetch {name!r}:\n  " + "\n  ".join(errors) + hint)

    def add(
        self,
        name: str,
        src: Path,
        validate: Callable[[Path, Path], str] | None = None,
        max_bytes: int | None = None,
    ) -> Path:
        """Check a file the user already has and cache it like a fetched one.

        ``src`` may be the artifact itself or an archive holding it (the manifest's
        ``member``), told apart by the file's first bytes. ``validate(copy, label)``
        checks the content (e.g. loads the weights; ``label`` is what its errors should
        name: the user's file, never the store's temporary copy) and returns a one-line
        summary; it raises on a bad file.

        Args:
            name: the artifact.
            src: the user's file or archive.
            validate: the content check.
            max_bytes: the most the artifact may be: a larger file, or an archive member
                declaring more, is refused before it is copied, and never more is
                written (an archive itself may be ``ARCHIVE_FACTOR`` times larger).

        Raises:
            StoreError: no such file, over the cap, not a readable archive.
            ChecksumError: the manifest pins another sha256.
        """
        art = self.artifact(name)
        src = Path(src)
        if not src.is_file():
            raise StoreError(f"{src}: no such file")
        member = next((s.member for s in art.sources if s.member), art.file)
        kind = archive_kind(src)
        if max_bytes is not None:
            cap = max_bytes if kind is None else ARCHIVE_FACTOR * max_bytes
            size = src.stat().st_size
            if size > cap:
                raise StoreError(
                    f"{src}: {size / MIB:.1f} MiB, larger than the {cap / MIB:.0f} MiB cap "
                    f"for {'an archive holding ' if kind else ''}{name}; nothing was cached"
                )
        label = src if kind is None else Path(f"{src} (member {member})")

        def produce(dest: Path) -> None:
            if kind is not None:
                extract_member(src, member, dest, max_bytes)
            else:
                with src.open("rb") as fh:
                    copy_limited(fh, dest, max_bytes, str(src))
            if validate is not None:
                logger.info("%s", validate(dest, label))

        self.cache_dir.mkdir(parents=True, exist_ok=True)
        # Adding a file on purpose replaces a checksum recorded on first use; a checksum
        # pinned in the manifest still applies.
        return self._install(art, produce, origin=str(src), replace_recorded=True)

    def _candidates(self, art: Artifact) -> list[tuple[str, Callable[[Path], None]]]:
        out: list[tuple[str, Callable[[Path], None]]] = []
        member = next((s.member for s in art.sources if s.member), art.file)
        for folder in self.mirrors:
            direct = folder / art.file
            if direct.is_file():
                out.append((f"mirror {direct}", _copier(direct)))
            if art.archive and (folder / art.archive).is_file():
                arch = folder / art.archive
                out.append((f"mirror {arch}", functools.partial(extract_member, arch, member)))
        for src in art.sources:
            out.append((src.describe(), functools.partial(obtain, src)))
        return out

    def _install(
        self,
        art: Artifact,
        produce: Callable[[Path], None],
        origin: str,
        replace_recorded: bool = False,
    ) -> Path:
        final = self.cache_dir / art.file
        self._sweep_partials()
        # The pid in the name lets a later run remove what a killed one left behind.
        fd, tmp_name = tempfile.mkstemp(
            dir=self.cache_dir, prefix=f".{art.file}.{os.getpid()}.", suffix=".part"
        )
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            produce(tmp)
            if tmp.stat().st_size == 0:
                raise ChecksumError(f"{art.file} from {origin}: empty file")
            actual = sha256_file(tmp)
            expected = art.sha256 if replace_recorded else self.expected_sha256(art.name)
            if expected and actual != expected:
                raise ChecksumError(
                    f"{art.file} from {origin}: sha256 {actual} does not match the "
                    f"manifest's {expected} (truncated or altered file); nothing was cached"
                )
            if not expected:
                self._record(art.name, actual)
                logger.warning(
                    "%s has no published checksum: recorded sha256 %s from %s "
                    "(in %s); later fetches and lookups are checked against it",
                    art.name,
                    actual,
                    origin,
                    self.cache_dir / RECORDED,
                )
            # mkstemp made it private (0600); a cached model is readable like any file
            # (a shared cache, an image's bundle read by a non-root user).
            os.chmod(tmp, CACHED_FILE_MODE)
            os.replace(tmp, final)
            final.with_name(final.name + ".sha256").write_text(actual + "\n")
            logger.info("%s: cached %s (sha256 %s) from %s", art.name, final, actual[:12], origin)
            return final
        finally:
            tmp.unlink(missing_ok=True)

    def _sweep_partials(self) -> None:
        """Remove temporary files (``.<file>.<pid>.<random>.part``) left by processes that
        no longer run: a SIGKILL gives no chance to clean up."""
        for part in self.cache_dir.glob(".*.part"):
            fields = part.name[: -len(".part")].split(".")
            pid = fields[-2] if len(fields) >= 3 else ""
            if pid.isdigit() and not _alive(int(pid)):
                logger.info("removing %s, left by process %s", part, pid)
                part.unlink(missing_ok=True)

    def _recorded(self) -> dict[str, str]:
        p = self.cache_dir / RECORDED
        try:
            data = json.loads(p.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}
        return {k: v for k, v in data.items() if isinstance(v, str)}

    def _record(self, name: str, sha: str) -> None:
        data = self._recorded()
        data[name] = sha
        p = self.cache_dir / RECORDED
        tmp = p.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, p)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _copier(src: Path) -> Callable[[Path], None]:
    def copy(dest: Path) -> None:
        try:
            shutil.copyfile(src, dest)
        except OSError as err:
            raise StoreError(f"cannot copy {src}: {err}") from err

    return copy


def mirrors_from_env() -> list[Path]:
    return _folders_from_env(MIRROR_ENV)


def _folders_from_env(env: str) -> list[Path]:
    raw = os.environ.get(env, "")
    return [Path(p).expanduser() for p in raw.split(os.pathsep) if p.strip()]


def default_store() -> ModelStore:
    """The store the environment configures (see the module docstring)."""
    bundles = _folders_from_env(BUNDLE_ENV)
    if models_env := os.environ.get(MODELS_DIR_ENV):
        cache = os.environ.get(CACHE_DIR_ENV)
        models_dir = Path(models_env).expanduser()
        return ModelStore(
            models_dir, Path(cache).expanduser() if cache else None, mirrors_from_env(), bundles
        )
    cache_dir = default_cache_dir()
    return ModelStore(
        cache_dir.parent, cache_dir, mirrors_from_env(), bundles, manifest_path=PACKAGED_MANIFEST
    )

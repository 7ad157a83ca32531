"""The image recipe against the package's own requirements, checked without building it.

The Dockerfile uninstalls what filterpy drags in but the analyzer never imports; a
package that later becomes a real dependency must leave that list, or the image build
fails at its `pip check` (as it did when Pillow became one for `streamer predict`).
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _canonical(requirement: str) -> str:
    name = re.split(r"[<>=!~;\[ ]", requirement.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def _runtime_unused() -> set[str]:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    match = re.search(r'^ARG RUNTIME_UNUSED="([^"]*)"', text, re.MULTILINE)
    assert match, "Dockerfile: no ARG RUNTIME_UNUSED"
    return {_canonical(name) for name in shlex.split(match.group(1))}


def test_the_image_uninstalls_no_runtime_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    needed = {_canonical(r) for r in project["dependencies"]}
    removed = _runtime_unused()
    assert removed, "RUNTIME_UNUSED parsed empty"
    assert not removed & needed, (
        f"the Dockerfile uninstalls dependencies: {sorted(removed & needed)}"
    )

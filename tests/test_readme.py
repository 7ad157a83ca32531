"""The README tells the truth: its example records are what a replay prints today, and
what its example commands write is ignored by git."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.cli import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FLOAT_TOLERANCE = 1e-4  # another CPU's onnxruntime may round the 6th decimal differently


def _json_examples(text: str) -> list[dict[str, Any]]:
    blocks = re.findall(r"```json\n(.*?)```", text, re.S)
    return [json.loads(" ".join(block.split("\n"))) for block in blocks]


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        ok = isinstance(a, int | float) and isinstance(b, int | float)
        return ok and abs(a - b) <= FLOAT_TOLERANCE
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def test_readme_example_records_come_from_a_replay(replay_jsonl: Path) -> None:
    """The replay of single_face.mp4 (the README's own command) prints these records."""
    examples = [e for e in _json_examples(README.read_text()) if e.get("camera") == "single_face"]
    assert examples, "the README shows a record of single_face.mp4"
    records = {
        (r["schema"], r.get("frame"), r.get("track_id"), r.get("event")): r
        for r in read_jsonl(replay_jsonl)
    }
    for ex in examples:
        key = (ex["schema"], ex.get("frame"), ex.get("track_id"), ex.get("event"))
        assert key in records, f"no such record in the replay: {key}"
        actual = records[key]
        assert list(ex) == list(actual), "the same keys in the same order"
        assert all(_close(ex[k], actual[k]) for k in ex), (
            "README.md shows a record the replay does not print; today's is:\n"
            + json.dumps(actual, separators=(",", ":"))
        )


def test_what_the_readme_commands_write_is_ignored_by_git() -> None:
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    # names in lower case: the upper-case ones (F.jsonl, OUT.png) are placeholders
    found = re.findall(r"(?:--out|-o|--annotate) ([a-z][\w./-]*\.\w+)", README.read_text())
    outputs = set(found)
    assert {"va.jsonl", "va.png", "clip.annotated.mp4"} <= outputs
    for out in sorted(outputs):
        proc = subprocess.run([git, "check-ignore", "-q", out], cwd=ROOT, check=False)
        assert proc.returncode == 0, f"{out} (written by a README command) is not in .gitignore"

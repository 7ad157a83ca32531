"""Fixtures of the history tests (the real PostgreSQL, ``pg_server`` and ``pg_url``, is
in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.history import EPISODE_RULES


@pytest.fixture
def rules_config(tmp_path: Path) -> Path:
    """A config whose episode rules fire on single_face.mp4, and room mood."""
    path = tmp_path / "rules.yaml"
    path.write_text(EPISODE_RULES)
    return path

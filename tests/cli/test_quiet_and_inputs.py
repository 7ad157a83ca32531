"""Small CLI promises: ``-q`` is quiet, special files are named as such, unset ``${VAR}``
in a camera URL fails validation."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

STREAMER = [sys.executable, "-m", "streamer"]


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*STREAMER, *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


def test_quiet_replay_prints_no_progress_and_no_summary(
    store_path: Callable[[str], Path],
) -> None:
    video = str(store_path("single_face.mp4"))
    loud = _run("replay", video)
    quiet = _run("-q", "replay", video)
    assert loud.returncode == quiet.returncode == 0, quiet.stderr
    assert "mean valence" in loud.stderr  # the summary table, so the check below can fail
    assert quiet.stderr.strip() == "", quiet.stderr
    assert quiet.stdout == loud.stdout


@pytest.fixture(scope="module")
def annotated_runs(
    store_path: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, subprocess.CompletedProcess[str]]:
    """``replay --annotate`` with -q after the command, and without it."""
    video = str(store_path("single_face.mp4"))
    d = tmp_path_factory.mktemp("annotate-q")
    runs = {}
    for name, flags in (("loud", []), ("quiet", ["-q"])):
        args = ["replay", video, "--out", str(d / f"{name}.jsonl")]
        runs[name] = _run(*args, "--annotate", str(d / f"{name}.mp4"), *flags)
        assert runs[name].returncode == 0, runs[name].stderr
    return runs


def test_q_after_the_command_hides_both_bars_and_the_summary(
    annotated_runs: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    loud, quiet = annotated_runs["loud"], annotated_runs["quiet"]
    assert "annotate ━" in loud.stderr and "replay ━" in loud.stderr  # so this can fail
    assert quiet.stderr.strip() == "", quiet.stderr


def test_progress_bar_and_summary_give_one_fps(
    annotated_runs: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    """One definition: frames per second of the analysis itself (models loaded)."""
    import re

    err = annotated_runs["loud"].stderr
    bar = re.search(r"replay ━+ (\d+)/(\d+) frames (\d+) fps", err)
    summary = re.search(r"(\d+) frames, \d+ faces: analysed in [\d.]+ s \((\d+) fps\)", err)
    assert bar and summary, err
    assert bar[1] == bar[2] == summary[1]
    assert bar[3] == summary[2]


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_predict_on_special_file_says_not_a_regular_file(tmp_path: Path, kind: str) -> None:
    if kind == "fifo":
        target = tmp_path / "face.jpg"
        os.mkfifo(target)
    elif os.geteuid() == 0:
        target = tmp_path / "null.jpg"
        os.mknod(target, 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    else:
        target = Path("/dev/null")
    proc = _run("predict", "--crops", str(target))
    assert proc.returncode == 1
    assert f"{target}: not a regular file" in proc.stderr
    assert "no such file" not in proc.stderr
    missing = _run("predict", "--crops", str(tmp_path / "missing.jpg"))
    assert "missing.jpg: no such file" in missing.stderr


def test_validate_config_fails_on_unset_url_variable(tmp_path: Path) -> None:
    cfg = tmp_path / "cams.yaml"
    cfg.write_text(
        "cameras:\n  - name: door\n    url: rtsp://${CAM_USER_UNSET_X}:pw@10.0.0.2/stream\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "CAM_USER_UNSET_X"}
    proc = subprocess.run(
        [*STREAMER, "validate-config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert proc.returncode == 1
    line = proc.stderr.strip().splitlines()[-1]
    assert line == (
        f"error: {cfg}:3: cameras.0.url: environment variable CAM_USER_UNSET_X is not set"
    )
    ok = _run("validate-config", str(cfg), env={"CAM_USER_UNSET_X": "bob"})
    assert ok.returncode == 0, ok.stderr


def test_a_command_line_builds_only_its_command_and_help_lists_all() -> None:
    import argparse

    from streamer.cli import COMMAND_MODULES, build_parser

    def commands(parser: argparse.ArgumentParser) -> set[str]:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        return set(sub.choices)

    assert commands(build_parser(["-q", "replay", "clip.mp4"])) == {"replay"}
    assert commands(build_parser(["validate-config", "c.yaml"])) == {"validate-config"}
    assert commands(build_parser([])) == set(COMMAND_MODULES)
    assert commands(build_parser(["--version"])) == set(COMMAND_MODULES)
    assert commands(build_parser(["no-such-command"])) == set(COMMAND_MODULES)

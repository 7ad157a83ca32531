"""Hostile config files: refused fast, in bounded memory, with one line naming file and line.

Each loader runs in a child process whose address space is capped (RLIMIT_AS), so a
loader that expands an alias bomb or reads a huge file dies with MemoryError instead of
printing the expected ``ERR`` line.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamer.config import load_config, parse_config
from streamer.config_yaml import MAX_CONFIG_BYTES
from streamer.errors import ConfigError

ADDRESS_SPACE_MIB = 700

_PROBE = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({limit} << 20, {limit} << 20))
from streamer.config import load_config
from streamer.errors import ConfigError
try:
    load_config(sys.argv[1])
except ConfigError as err:
    print("ERR", err)
else:
    print("OK")
"""


def _bomb(prefix: str = "") -> str:
    rows = [f'{prefix}a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        rows.append(f"{prefix}{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "\n".join(rows) + "\n"


def _load_in_capped_child(path: Path) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE.format(limit=ADDRESS_SPACE_MIB), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout
    return lines[0]


def _write_big_comment_file(path: Path, size: int) -> None:
    line = b"#" * 1023 + b"\n"
    with path.open("wb") as fh:
        for _ in range(size // len(line)):
            fh.write(line)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("bomb", "bomb.yaml:6: aliases expand to more than"),
        ("bomb_under_key", "bomb_under_key.yaml:6: aliases expand to more than"),
        ("deep", "deep.yaml:1: "),
        ("huge_comments", "huge_comments.yaml: config file too large"),
        ("duplicate", "duplicate.yaml:4: duplicate key 'faces' (first given on line 1)"),
        ("self_alias", "self_alias.yaml:1: an alias refers to itself"),
    ],
)
def test_hostile_config_is_refused_in_bounded_memory(
    tmp_path: Path, name: str, expected: str
) -> None:
    path = tmp_path / f"{name}.yaml"
    if name == "bomb":
        path.write_text(_bomb())
    elif name == "bomb_under_key":
        path.write_text(_bomb("x") + "faces:\n  detector:\n    score_threshold: *j\n")
    elif name == "deep":
        path.write_text("[" * 100_000)
    elif name == "huge_comments":
        _write_big_comment_file(path, 50 << 20)
    elif name == "duplicate":
        path.write_text("faces:\n  detector:\n    score_threshold: 0.5\nfaces: {}\n")
    else:
        path.write_text("a: &a [*a]\n")
    out = _load_in_capped_child(path)
    assert out.startswith("ERR "), out
    assert expected in out
    if name == "deep":
        assert "nest" in out


def test_alias_bomb_under_score_threshold_names_the_alias_line() -> None:
    text = _bomb("x") + "faces:\n  detector:\n    score_threshold: *j\n"
    with pytest.raises(ConfigError, match=r"^cfg\.yaml:\d+: aliases expand to more than"):
        parse_config(text, "cfg.yaml")


def test_depth_limit_also_counts_aliases() -> None:
    rows = ["a0: &a0 [1]"] + [f"a{i}: &a{i} [*a{i - 1}]" for i in range(1, 80)]
    with pytest.raises(ConfigError, match="nested deeper than 64 levels through aliases"):
        parse_config("\n".join(rows) + "\n", "cfg.yaml")


def test_shared_anchors_and_merge_keys_still_work() -> None:
    text = (
        "cameras:\n"
        "  - &cam {name: a, url: rtsp://h/a}\n"
        "  - {<<: *cam, name: b}\n"
        "faces:\n"
        "  detector:\n"
        "    score_threshold: &t 0.7\n"
    )
    cfg = parse_config(text, "cfg.yaml")
    assert [(c.name, c.url) for c in cfg.cameras] == [("a", "rtsp://h/a"), ("b", "rtsp://h/a")]
    assert cfg.faces.detector.score_threshold == 0.7


def test_nested_duplicate_key_names_both_lines() -> None:
    text = "faces:\n  detector:\n    score_threshold: 0.5\n    score_threshold: 0.6\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, "cfg.yaml")
    assert str(info.value) == (
        "cfg.yaml:4: duplicate key 'score_threshold' (first given on line 3)"
    )


def test_config_from_a_pipe_works_and_an_endless_device_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "cfg.yaml"
    os.mkfifo(fifo)

    def write() -> None:
        with fifo.open("w") as fh:
            fh.write("faces:\n  detector:\n    score_threshold: 0.8\n")

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    assert load_config(fifo).faces.detector.score_threshold == 0.8
    writer.join(timeout=10)
    if Path("/dev/zero").exists():
        assert _load_in_capped_child(Path("/dev/zero")) == (
            f"ERR /dev/zero: config file too large (the limit is {MAX_CONFIG_BYTES} bytes)"
        )
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


def test_size_limit_is_a_mebibyte() -> None:
    assert MAX_CONFIG_BYTES == 1 << 20
    with pytest.raises(ConfigError, match="too large"):
        parse_config("#" * (MAX_CONFIG_BYTES + 1), "cfg.yaml")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=400))
def test_arbitrary_text_is_a_config_or_one_config_error(text: str) -> None:
    try:
        parse_config(text, "cfg.yaml")
    except ConfigError as err:
        assert str(err).startswith("cfg.yaml")


_yaml_atoms = st.sampled_from(
    [
        "faces:",
        "  detector:",
        "    score_threshold: ",
        "&a ",
        "*a",
        "<<: *a",
        "[",
        "]",
        "{",
        "}",
        "- ",
        ": ",
        "? ",
        "!!python/object:os.system ",
        "!!binary ",
        "cameras:",
        "  - name: x",
        "    url: ${NOPE}",
        "\n",
        "  ",
        "0.5",
        "null",
        "'",
        '"',
        "\t",
        "\x00",
        "\ufeff",
        "%YAML 1.1\n",
        "---\n",
        "...\n",
    ]
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_yaml_atoms | st.text(max_size=5), max_size=40))
def test_yaml_shaped_text_never_escapes_as_another_exception(parts: list[str]) -> None:
    text = "".join(parts)
    try:
        parse_config(text, "cfg.yaml")
    except ConfigError as err:
        assert str(err).startswith("cfg.yaml")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_on_disk_are_one_config_error(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    path = tmp_path_factory.mktemp("cfg") / "cfg.yaml"
    path.write_bytes(data)
    try:
        load_config(path)
    except ConfigError as err:
        assert str(err).startswith(str(path))

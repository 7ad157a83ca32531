"""``streamer plot`` and ``streamer episodes`` on hostile JSONL: one line naming the file
and the line, exit 1, never a traceback; time never runs backwards within a track (or
``--sort``); records of other schemas are counted and reported (streamer/recorded.py)."""

from __future__ import annotations

import json
import random
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamer.cli import main
from tests.helpers.cli import read_jsonl, run_streamer

pytest.importorskip("matplotlib", reason="the optional 'plot' extra (matplotlib) is not installed")

RULES = """\
episodes:
  rules:
    - name: smiling
      when: {valence_above: 0.3}
      for_s: 0.5
"""

VA: dict[str, Any] = {
    "schema": "streamer.va/1",
    "camera": "c",
    "frame": 0,
    "t": 0.0,
    "track_id": 1,
    "box": [1.0, 2.0, 30.0, 40.0],
    "valence": 0.5,
    "arousal": 0.2,
    "valence_raw": 0.5,
    "arousal_raw": 0.2,
    "variance": [0.01, 0.01],
    "model": "m",
}


@pytest.fixture(scope="module")
def rules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = tmp_path_factory.mktemp("cfg") / "rules.yaml"
    cfg.write_text(RULES)
    return cfg


def _command(which: str, path: Path, rules: Path, *extra: str) -> list[str]:
    if which == "plot":
        return ["plot", str(path), "-o", str(path.with_name("out.png")), *extra]
    return ["episodes", str(path), "--config", str(rules), *extra]


def _run(
    which: str, path: Path, rules: Path, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, str, str]:
    code = main(_command(which, path, rules, *extra))
    out, err = capsys.readouterr()
    return code, out, err


def _assert_one_line_naming(err: str, path: Path, n: int | None = None) -> str:
    assert "Traceback" not in err, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err[-3000:]
    m = re.match(rf"error: {re.escape(str(path))}:(\d+): ", errors[0])
    assert m, errors[0]
    if n is not None:
        assert int(m[1]) == n, errors[0]
    return errors[0]


def _va(**fields: Any) -> str:
    return json.dumps({**VA, **fields})


HOSTILE = {
    "nested-100k": ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    "nested-in-a-field": (_va(camera="[" * 50_000), ""),  # a long text: refused by size
    "int-5000-digits": (_va(valence=0).replace('"valence": 0', '"valence": ' + "9" * 5000), ""),
    "t-1e400-as-integer": (_va(t=0).replace('"t": 0', '"t": 1' + "0" * 400), "finite"),
    "t-1e400": (_va(t=0).replace('"t": 0', '"t": 1e400'), "finite"),
    "nan": (_va(t=0).replace('"t": 0', '"t": NaN'), "finite"),
    "not-utf8": ('{"schema": "\xff"}', "not UTF-8"),
    "lone-surrogate": (_va(camera="x").replace('"x"', '"\\ud800"'), "not valid text"),
    "huge-line": (" " * (1 << 20) + "{}", "longer than"),
    "list": ("[1, 2]", "expected a JSON object"),
    "bool-track": (_va(track_id=True), "track_id must be an integer"),
    "negative-variance": (_va(variance=[-1, 0]), "variance must not be negative"),
    "valence-out-of-range": (_va(valence=7), "within [-1, 1]"),
    "box-of-3": (_va(box=[1, 2, 3]), "box must be a list of 4 numbers"),
    "unknown-event": (json.dumps({**VA, "schema": "streamer.event/1", "event": "x"}), "event"),
}


@pytest.mark.parametrize(
    ("which", "case"),
    [
        (which, case)
        for case in sorted(HOSTILE)
        for which in ("plot", "episodes")
        if not (which == "plot" and case == "unknown-event")  # plot reads no events
    ],
)
def test_hostile_line_is_one_error_naming_file_and_line(
    tmp_path: Path, rules: Path, which: str, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    line, message = HOSTILE[case]
    path = tmp_path / "va.jsonl"
    data = (_va() + "\n" + line + "\n").encode("utf-8", "surrogateescape")
    if case == "not-utf8":
        data = (_va() + "\n").encode() + b'{"schema": "\xff"}\n'
    path.write_bytes(data)
    code, _, err = _run(which, path, rules, capsys)
    assert code == 1
    error = _assert_one_line_naming(err, path, 2)
    assert message in error
    assert not path.with_name("out.png").exists()


# ---- the property: any lines at all -----------------------------------------------------

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
NUMBER_TEXT = st.sampled_from(
    ["1e400", "-1e400", "NaN", "Infinity", "1" + "0" * 400, "9" * 5000, "-0", "0.5", "2"]
)


@st.composite
def va_lines(draw: st.DrawFn) -> str:
    """A VA or event record with some fields replaced by anything."""
    rec = dict(VA)
    if draw(st.booleans()):
        rec = {"schema": "streamer.event/1", "camera": "c", "track_id": 1, "frame": 0}
        rec |= {"t": 0.0, "event": draw(st.sampled_from(["appeared", "lost", "x"]))}
    for key in draw(st.lists(st.sampled_from(sorted(rec)), max_size=3)):
        rec[key] = draw(JSON)
    text = json.dumps(rec)
    if draw(st.booleans()):
        key = draw(st.sampled_from(["t", "valence", "arousal", "track_id", "frame"]))
        text = re.sub(rf'"{key}": [^,}}]+', f'"{key}": {draw(NUMBER_TEXT)}', text, count=1)
    return text


LINES = st.lists(
    st.one_of(
        st.text(max_size=40),
        JSON.map(json.dumps),
        va_lines(),
        st.integers(1, 3000).map(lambda k: "[" * k + "]" * k),
        st.integers(0, 5).map(lambda k: _va(t=k / 10, valence=0.5 - k / 10)),
    ),
    min_size=1,
    max_size=6,
)


@pytest.mark.parametrize("which", ["plot", "episodes"])
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(lines=LINES)
def test_any_lines_give_a_result_or_one_error_line(
    rules: Path, which: str, lines: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "any.jsonl"
        path.write_bytes("\n".join(lines).encode("utf-8", "surrogatepass"))
        code, _, err = _run(which, path, rules, capsys)
        assert "Traceback" not in err, err[-3000:]
        if code == 0:
            assert not [line for line in err.splitlines() if line.startswith("error:")]
        else:
            assert code == 1, err
            error = _assert_one_line_naming(err, path)
            n = int(error.split(":")[2])
            assert 1 <= n <= max(1, len(path.read_bytes().splitlines())), error


# ---- time never runs backwards within a track -----------------------------------------


def _shuffled(replay_jsonl: Path, tmp_path: Path) -> tuple[Path, int]:
    """The real replay's lines shuffled; and the first line whose track's t goes back."""
    lines = replay_jsonl.read_text().splitlines()
    random.Random(7).shuffle(lines)
    path = tmp_path / "shuffled.jsonl"
    path.write_text("\n".join(lines) + "\n")
    last: dict[tuple[str, int], float] = {}
    for n, line in enumerate(lines, 1):
        rec = json.loads(line)
        if rec["schema"] not in ("streamer.va/1", "streamer.event/1"):
            continue
        key = (rec["camera"], rec["track_id"])
        if key in last and rec["t"] < last[key]:
            return path, n
        last[key] = rec["t"]
    raise AssertionError("the shuffle kept the order")


@pytest.mark.parametrize("which", ["plot", "episodes"])
def test_time_running_backwards_is_refused_at_its_line(
    replay_jsonl: Path,
    tmp_path: Path,
    rules: Path,
    which: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path, n = _shuffled(replay_jsonl, tmp_path)
    code, _, err = _run(which, path, rules, capsys)
    assert code == 1
    error = _assert_one_line_naming(err, path, n)
    assert "time runs backwards" in error and "--sort" in error


def test_sort_gives_the_episodes_of_the_ordered_file(
    replay_jsonl: Path, tmp_path: Path, rules: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = _shuffled(replay_jsonl, tmp_path)
    code, ordered, err = _run("episodes", replay_jsonl, rules, capsys, "--json")
    assert code == 0, err
    assert ordered.strip(), "the rule gives an episode on the real clip"
    code, sorted_out, err = _run("episodes", path, rules, capsys, "--json", "--sort")
    assert code == 0, err
    assert sorted_out == ordered
    for ep in map(json.loads, ordered.splitlines()):
        if ep.get("t_end") is not None:
            assert ep["t_end"] >= ep["t_start"]


def test_sort_draws_the_plot_of_the_ordered_file(
    replay_jsonl: Path, tmp_path: Path, rules: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = _shuffled(replay_jsonl, tmp_path)
    code, _, err = _run("plot", path, rules, capsys, "--sort")
    assert code == 0, err
    assert path.with_name("out.png").read_bytes()[:4] == b"\x89PNG"


# ---- records of other schemas are counted and reported --------------------------------


@pytest.mark.parametrize("which", ["plot", "episodes"])
def test_records_of_unknown_schemas_are_counted_and_reported(
    replay_jsonl: Path, tmp_path: Path, rules: Path, which: str
) -> None:
    recs = read_jsonl(replay_jsonl)
    future = [json.dumps({**r, "schema": "streamer.va/99"}) for r in recs[:12]]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join([*map(json.dumps, recs), *future, '{"no": "schema"}']) + "\n")
    proc = run_streamer(*_command(which, path, rules))  # what the terminal shows
    assert proc.returncode == 0, proc.stderr
    err = proc.stderr
    flat = " ".join(err.split())
    assert "skipped 12 record(s) of schema streamer.va/99" in flat, err
    assert "1 of (none)" in flat
    assert "unknown to this version" in flat

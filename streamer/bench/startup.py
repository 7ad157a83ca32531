"""``streamer bench startup``: start-up cost of ``replay`` and ``predict``, as JSON.

Each command runs in a fresh interpreter (as a user runs it) and is timed wall clock,
against the bare import of the libraries any run needs
(``python -c "import numpy, cv2, av, onnxruntime"``) measured in the same rounds. The
commands are interleaved round by round, so a load change on the machine hits them
alike; the ratio of the medians is the figure to compare. One warm-up round first builds
the caches (ONNX model, optimised session) as a user's first run does.

Also reported: the import time of filterpy (with numpy already loaded) and, from one
``python -X importtime`` run of the replay, the cumulative import time of the heavy
modules that start-up must not pay (``null``: not imported before the first result).

``replay_1_frame`` is the quiet replay (``-q --no-progress``: no bar, no table, no log
line). ``replay_1_frame_as_typed`` is the same replay as a user types it, through the
installed console script (``streamer replay CLIP --out F``, beside this interpreter;
left out where there is none): it adds the INFO log lines and the summary table on
stderr (the progress bar only shows on runs longer than half a second). The console
script itself costs what ``python -m streamer`` costs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from streamer.bench.harness import emit, resolve_media
from streamer.errors import MediaError

BARE_IMPORT = "import numpy, cv2, av, onnxruntime"
HEAVY_MODULES = (
    "filterpy", "scipy", "onnx", "h5py", "jsonschema", "rich", "yaml", "aiomqtt", "ollama",
    "sqlalchemy",
)  # fmt: skip
FILTERPY_PROBE = (
    "import time, numpy; t = time.perf_counter(); import filterpy.kalman; "
    "print(time.perf_counter() - t)"
)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("startup", help="start-up time of replay and predict vs the bare imports")
    p.add_argument(
        "--clip",
        default="single_face.mp4",
        help="video whose first frame becomes the 1-frame clip (path or store media name)",
    )
    p.add_argument(
        "--image", default="single_face.jpg", help="still image for predict (path or store name)"
    )
    p.add_argument("--repeat", type=int, default=5, help="timed rounds (default 5)")
    p.set_defaults(func=cmd_bench_startup)


def one_frame_clip(src: Path, dest: Path) -> Path:
    """Write the first frame of ``src`` as a 1-frame H.264 MP4 at ``dest``."""
    import av

    with av.open(str(src)) as inp:
        frame = next(inp.decode(video=0), None)
    if frame is None:
        raise MediaError(f"{src}: no video frame")
    with av.open(str(dest), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height = frame.width - frame.width % 2, frame.height - frame.height % 2
        stream.pix_fmt = "yuv420p"
        img = frame.to_ndarray(format="bgr24")[: stream.height, : stream.width]
        vf = av.VideoFrame.from_ndarray(img, format="bgr24")
        for packet in stream.encode(vf):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return dest


def _env() -> dict[str, str]:
    """The children's environment: bytecode caching on, as in a user's install (a
    ``PYTHONDONTWRITEBYTECODE`` set here would recompile streamer's modules each run)."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=_env())
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise MediaError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-400:]}")
    return wall


def heavy_imports(cmd: list[str]) -> dict[str, float | None]:
    """Cumulative import seconds of :data:`HEAVY_MODULES` in one ``-X importtime`` run."""
    proc = subprocess.run(
        [cmd[0], "-X", "importtime", *cmd[1:]],
        capture_output=True,
        text=True,
        check=False,
        env=_env(),
    )
    found: dict[str, float | None] = dict.fromkeys(HEAVY_MODULES)
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = line[len("import time:") :].split("|")
        name = name.strip()
        if name in found and cumulative.strip().isdigit():
            found[name] = round(int(cumulative) / 1e6, 3)
    return found


def cmd_bench_startup(args: argparse.Namespace) -> int:
    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="streamer-startup-") as tmp:
        clip = one_frame_clip(resolve_media(args.clip), Path(tmp) / "one_frame.mp4")
        image = resolve_media(args.image)
        replay_args = ["--no-progress", "--out", str(Path(tmp) / "out.jsonl")]
        cmds = {
            "bare_import": [py, "-c", BARE_IMPORT],
            "replay_1_frame": [py, "-m", "streamer", "-q", "replay", str(clip), *replay_args],
            "predict_image": [py, "-m", "streamer", "-q", "predict", str(image)],
        }
        script = Path(py).parent / "streamer"
        if script.is_file():
            out = str(Path(tmp) / "typed.jsonl")
            cmds["replay_1_frame_as_typed"] = [str(script), "replay", str(clip), "--out", out]
        for cmd in cmds.values():  # warm-up: caches, file cache
            _timed(cmd)
        times: dict[str, list[float]] = {k: [] for k in cmds}
        for _ in range(max(1, args.repeat)):
            for key, cmd in cmds.items():
                times[key].append(_timed(cmd))
        filterpy_s = float(
            subprocess.run(
                [py, "-c", FILTERPY_PROBE], capture_output=True, text=True, check=True
            ).stdout
        )
        heavy = heavy_imports(cmds["replay_1_frame"])
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "bench": "startup",
        "bare_import": BARE_IMPORT,
        "median_s": {k: round(v, 3) for k, v in med.items()},
        "min_s": {k: round(min(v), 3) for k, v in times.items()},
        "ratio_to_bare_import": {
            k: round(med[k] / med["bare_import"], 2) for k in cmds if k != "bare_import"
        },
        "limit_ratio": 2.5,
        "filterpy_import_s": round(filterpy_s, 3),
        "replay_heavy_imports_s": heavy,
        "rounds": len(times["bare_import"]),
        "bytecode_cache": True,
    }
    return emit(result)

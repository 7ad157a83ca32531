"""``streamer plot``: a PNG per real replay, one panel row per track; bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamer.cli import main
from tests.helpers.cli import read_jsonl, run_streamer

pytest.importorskip("matplotlib", reason="the optional 'plot' extra (matplotlib) is not installed")

ROW_PX = (1200, 360)  # width, height of one track's row


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@pytest.fixture(scope="module")
def two_cameras(replay_jsonl: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real replay's records twice, the second copy as another camera: two tracks."""
    recs = read_jsonl(replay_jsonl)
    out = tmp_path_factory.mktemp("plot") / "two.jsonl"
    lines = [json.dumps(r) for r in recs] + [json.dumps({**r, "camera": "other"}) for r in recs]
    out.write_text("\n".join(lines) + "\n")
    return out


def test_plot_writes_a_png_for_a_real_replay(replay_jsonl: Path, tmp_path: Path) -> None:
    out = tmp_path / "va.png"
    proc = run_streamer("plot", str(replay_jsonl), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert png_size(out) == ROW_PX


def test_plot_default_output_is_next_to_the_input(replay_jsonl: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run.jsonl"
    copy.write_bytes(replay_jsonl.read_bytes())
    assert main(["plot", str(copy)]) == 0
    assert png_size(tmp_path / "run.png") == ROW_PX


@pytest.mark.parametrize(
    ("args", "rows"),
    [
        ((), 2),
        (("--camera", "other"), 1),
        (("--track", "1"), 2),
        (("--track", "1", "--camera", "single_face"), 1),
    ],
)
def test_one_panel_row_per_track(
    two_cameras: Path, tmp_path: Path, args: tuple[str, ...], rows: int
) -> None:
    out = tmp_path / "va.png"
    assert main(["plot", str(two_cameras), "-o", str(out), *args]) == 0
    assert png_size(out) == (ROW_PX[0], ROW_PX[1] * rows)


VA = {
    "schema": "streamer.va/1",
    "camera": "c",
    "track_id": 1,
    "t": 0.0,
    "frame": 0,
    "valence": 0.1,
    "arousal": 0.2,
    "variance": [0.01, 0.01],
    "model": "m",
}
STATUS = {"schema": "streamer.status/1", "camera": "c", "state": "online"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "bad.jsonl:1: empty file"),
        ("\n\n", "bad.jsonl:1: empty file"),
        (json.dumps(VA) + "\n{not json\n", "bad.jsonl:2: not valid JSON"),
        (json.dumps(VA) + "\n[1, 2]\n", "bad.jsonl:2: expected a JSON object"),
        (
            json.dumps({**VA, "valence": "high"}) + "\n",
            "bad.jsonl:1: a streamer.va/1 record: valence must be a number, got a text",
        ),
        (
            json.dumps({**VA, "arousal": None}) + "\n",
            "bad.jsonl:1: a streamer.va/1 record: arousal must be a number, got nothing",
        ),
        (json.dumps(STATUS) + "\n" + json.dumps(STATUS) + "\n", "bad.jsonl:2: no valence/arousal"),
    ],
)
def test_bad_input_is_one_clear_error_and_no_png(
    tmp_path: Path, text: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(text)
    out = tmp_path / "bad.png"
    assert main(["plot", str(bad), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert message in err, err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [bad]  # no temporary file left either


def test_a_selection_matching_nothing_names_the_tracks(
    replay_jsonl: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "x.png"
    assert main(["plot", str(replay_jsonl), "-o", str(out), "--track", "99"]) == 1
    err = capsys.readouterr().err
    assert "no track matches the selection (tracks: single_face/1)" in err
    assert not out.exists()


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plot", str(tmp_path / "none.jsonl")]) == 1
    assert "none.jsonl: no such file" in capsys.readouterr().err


def _track(model: str) -> Any:
    from streamer.cli.plot import TrackSeries

    tr = TrackSeries("c", 1, model)
    for i in range(5):
        tr.t.append(i / 10)
        tr.valence.append(0.8)
        tr.arousal.append(0.5)
        tr.valence_raw.append(0.8)
        tr.arousal_raw.append(0.5)
        tr.sd.append((0.1, 0.1))
    return tr


@pytest.mark.parametrize(
    ("model", "drawn"), [("fer-minixception-va~approx", True), ("facechannel-v1", False)]
)
def test_the_embedded_models_reach_is_drawn_on_the_plane_only_for_it(
    model: str, drawn: bool
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from streamer.affect.projection import category_hull
    from streamer.cli.plot import HULL_LABEL, _plane_panel

    fig, ax = plt.subplots()
    try:
        _plane_panel(ax, _track(model))
        from matplotlib.patches import Polygon

        hulls = [p for p in ax.patches if isinstance(p, Polygon) and p.get_label() == HULL_LABEL]
        assert len(hulls) == int(drawn)
        if drawn:
            corners = hulls[0].get_xy()[:-1]  # a closed polygon repeats its first corner
            np.testing.assert_allclose(corners, category_hull(), atol=1e-6)
            legend = ax.get_legend()
            assert legend is not None and HULL_LABEL in [t.get_text() for t in legend.texts]
    finally:
        plt.close(fig)


def test_the_png_of_the_embedded_model_differs_by_its_reach(
    replay_jsonl: Path, tmp_path: Path
) -> None:
    recs = read_jsonl(replay_jsonl)
    pngs = {}
    for model in ("fer-minixception-va~approx", "facechannel-v1"):
        path = tmp_path / f"{model}.jsonl"
        path.write_text("\n".join(json.dumps({**r, "model": model}) for r in recs) + "\n")
        assert main(["plot", str(path), "-o", str(tmp_path / f"{model}.png")]) == 0
        pngs[model] = (tmp_path / f"{model}.png").read_bytes()
    assert pngs["fer-minixception-va~approx"] != pngs["facechannel-v1"]

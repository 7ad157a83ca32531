"""``streamer plot RESULTS.jsonl [-o OUT.png] [--track ID ...] [--camera NAME]``.

One panel row per track: valence and arousal over media time (raw faint, smoothed bold,
one standard deviation of the Kalman filter as a band) and the trajectory on the
valence-arousal plane with the unit circle and the quadrant names. Needs the optional
``plot`` extra (matplotlib, non-interactive Agg backend).
"""

from __future__ import annotations

import argparse
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamer.circumplex import NEUTRAL_RADIUS, quadrant
from streamer.errors import ConfigError, RecordError, StreamerError
from streamer.messages import VA_SCHEMA, VASample
from streamer.output import OutputFile
from streamer.recorded import RecordReader, report_skipped

logger = logging.getLogger(__name__)

ROW_W_IN = 12.0  # figure width (inches)
ROW_H_IN = 3.6  # height of one track's row (inches)
DPI = 100
MAX_ROWS = 20  # tracks drawn at most (the longest ones)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "plot",
        help="plot valence/arousal per track from a replay's JSON lines (PNG)",
        description="Per track: valence and arousal over time (raw, smoothed, variance "
        "band) and the trajectory on the valence-arousal plane. Needs the 'plot' extra.",
    )
    p.add_argument("results", type=Path, help="JSON lines written by replay or run")
    p.add_argument("-o", "--out", type=Path, help="PNG to write (default: RESULTS.png)")
    p.add_argument(
        "--track", type=int, action="append", metavar="ID", help="only this track (repeatable)"
    )
    p.add_argument("--camera", help="only this camera")
    p.add_argument(
        "--sort",
        action="store_true",
        help="order the records by media time t first (default: a track whose t runs "
        "backwards is an error naming the line)",
    )
    p.set_defaults(func=cmd_plot)


@dataclass
class TrackSeries:
    camera: str
    track_id: int
    model: str
    t: list[float] = field(default_factory=list)
    valence: list[float] = field(default_factory=list)
    arousal: list[float] = field(default_factory=list)
    valence_raw: list[float] = field(default_factory=list)
    arousal_raw: list[float] = field(default_factory=list)
    sd: list[tuple[float, float]] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        return self.t[-1] - self.t[0] if self.t else 0.0


def read_tracks(path: Path, *, sort: bool = False) -> dict[tuple[str, int], TrackSeries]:
    """Every VA record of ``path`` grouped by (camera, track); errors name file and line
    (:mod:`streamer.recorded`)."""
    reader = RecordReader(path, frozenset({VA_SCHEMA}), sort=sort)
    tracks: dict[tuple[str, int], TrackSeries] = {}
    for _, msg in reader.messages():
        assert isinstance(msg, VASample)
        tr = tracks.get((msg.camera, msg.track_id))
        if tr is None:
            tr = tracks[(msg.camera, msg.track_id)] = TrackSeries(
                msg.camera, msg.track_id, msg.model
            )
        tr.t.append(msg.t)
        tr.valence.append(msg.valence)
        tr.arousal.append(msg.arousal)
        tr.valence_raw.append(math.nan if msg.valence_raw is None else msg.valence_raw)
        tr.arousal_raw.append(math.nan if msg.arousal_raw is None else msg.arousal_raw)
        tr.sd.append((math.sqrt(msg.variance[0]), math.sqrt(msg.variance[1])))
    if reader.lines == 0 or (not tracks and not reader.skipped):
        raise RecordError(f"{path}:1: empty file: no records to plot")
    if not tracks:
        raise RecordError(
            f"{path}:{reader.lines}: no valence/arousal record ({VA_SCHEMA}) in "
            f"{reader.lines} line(s): nothing to plot"
        )
    report_skipped(reader)
    return tracks


def select(
    tracks: dict[tuple[str, int], TrackSeries],
    ids: list[int] | None,
    camera: str | None,
    path: Path,
) -> list[TrackSeries]:
    chosen = [
        tr
        for tr in tracks.values()
        if (camera is None or tr.camera == camera) and (not ids or tr.track_id in ids)
    ]
    if not chosen:
        have = ", ".join(f"{c}/{i}" for c, i in sorted(tracks))
        raise ConfigError(f"{path}: no track matches the selection (tracks: {have})")
    chosen.sort(key=lambda tr: (tr.camera, tr.track_id))
    if len(chosen) > MAX_ROWS:
        logger.warning("%d tracks: plotting the %d longest", len(chosen), MAX_ROWS)
        longest = sorted(chosen, key=lambda tr: -tr.duration_s)[:MAX_ROWS]
        chosen = [tr for tr in chosen if tr in longest]
    return chosen


def _title(tr: TrackSeries) -> str:
    approx = " (approximate)" if "approx" in tr.model else ""
    return (
        f"camera {tr.camera} · track {tr.track_id} · {tr.duration_s:.1f} s · "
        f"model {tr.model}{approx}"
    )


def _time_panel(ax: Any, tr: TrackSeries) -> None:
    for values, raw, k, colour, name in (
        (tr.valence, tr.valence_raw, 0, "tab:blue", "valence"),
        (tr.arousal, tr.arousal_raw, 1, "tab:orange", "arousal"),
    ):
        lo = [x - sd[k] for x, sd in zip(values, tr.sd, strict=True)]
        hi = [x + sd[k] for x, sd in zip(values, tr.sd, strict=True)]
        ax.fill_between(tr.t, lo, hi, color=colour, alpha=0.15, linewidth=0)
        ax.plot(tr.t, raw, color=colour, alpha=0.3, linewidth=0.8)
        ax.plot(tr.t, values, color=colour, linewidth=2.0, label=name)
    ax.axhline(0.0, color="grey", linewidth=0.6)
    ax.set_ylim(-1.05, 1.05)
    ax.set_xlabel("media time (s)")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(_title(tr), fontsize=10, loc="left")


HULL_LABEL = "all the embedded model can reach"


def reachable_region(model: str) -> list[tuple[float, float]] | None:
    """The region of the VA plane ``model`` can reach at all, when it is bounded: the
    embedded model's hull of category points (docs/affect.md); None for a dimensional
    model such as FaceChannel."""
    from streamer.affect.models import FER_VA_NAME
    from streamer.affect.projection import category_hull

    if model != FER_VA_NAME:
        return None
    return [(float(v), float(a)) for v, a in category_hull()]


def _plane_panel(ax: Any, tr: TrackSeries) -> None:
    import matplotlib.patches as mpatches

    hull = reachable_region(tr.model)
    if hull is not None:
        # so nobody reads 0.81 as "81 % happy": the model's whole reach, drawn
        ax.add_patch(
            mpatches.Polygon(
                hull,
                closed=True,
                facecolor="tab:green",
                alpha=0.08,
                edgecolor="tab:green",
                linestyle="--",
                linewidth=0.8,
                label=HULL_LABEL,
            )
        )
        ax.legend(loc="lower left", fontsize=7, frameon=False)

    ax.add_patch(mpatches.Circle((0, 0), 1.0, fill=False, color="grey", linewidth=0.8))
    ax.axhline(0.0, color="grey", linewidth=0.6)
    ax.axvline(0.0, color="grey", linewidth=0.6)
    ax.add_patch(mpatches.Circle((0, 0), NEUTRAL_RADIUS, fill=False, color="grey", linewidth=0.5))
    for v_pos, a_pos in ((True, True), (True, False), (False, True), (False, False)):
        ax.text(
            0.55 if v_pos else -0.55,
            0.85 if a_pos else -0.85,
            quadrant(0.5 if v_pos else -0.5, 0.5 if a_pos else -0.5).value,
            ha="center",
            fontsize=8,
            color="dimgrey",
        )
    ax.plot(tr.valence, tr.arousal, color="black", linewidth=0.6, alpha=0.5)
    ax.scatter(tr.valence, tr.arousal, c=tr.t, cmap="viridis", s=6)
    ax.scatter(tr.valence[-1:], tr.arousal[-1:], color="red", s=24, zorder=3)
    ax.set_xlim(-1.1, 1.1)
    ax.set_ylim(-1.1, 1.1)
    ax.set_aspect("equal")
    ax.set_xlabel("valence")
    ax.set_ylabel("arousal")


def plot_tracks(tracks: list[TrackSeries], out: OutputFile) -> tuple[int, int]:
    """Draw ``tracks`` (one row each) into the PNG ``out``; returns its (width, height) px."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise StreamerError("streamer plot needs matplotlib: pip install 'streamer[plot]'") from err
    rows = len(tracks)
    fig, axes = plt.subplots(
        rows,
        2,
        figsize=(ROW_W_IN, ROW_H_IN * rows),
        dpi=DPI,
        gridspec_kw={"width_ratios": [2.6, 1]},
        squeeze=False,
    )
    try:
        for row, tr in zip(axes, tracks, strict=True):
            _time_panel(row[0], tr)
            _plane_panel(row[1], tr)
        fig.tight_layout()
        with out.writing("wb") as fh:
            fig.savefig(fh, dpi=DPI, format="png")
    finally:
        plt.close(fig)
    return round(ROW_W_IN * DPI), round(ROW_H_IN * DPI * rows)


def cmd_plot(args: argparse.Namespace) -> int:
    path: Path = args.results
    out = (
        OutputFile(args.out, flag="-o", inputs=[path])
        if args.out is not None
        else OutputFile(path.with_suffix(".png"), inputs=[path])
    )
    out.check()
    tracks = select(read_tracks(path, sort=args.sort), args.track, args.camera, path)
    w, h = plot_tracks(tracks, out)
    logger.info("wrote %s (%d track(s), %dx%d px)", out.path, len(tracks), w, h)
    return 0

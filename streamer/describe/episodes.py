"""Descriptions of ended episodes: a deterministic sentence at once, the LLM's later.

The describer reads ended :class:`~streamer.messages.Episode` messages from the bus
(they carry their VA trajectory when the composition asks the episodes stage for it).
The fallback names the rule, the duration and the episode's VA; the LLM is asked about
the episode's trajectory through the same queue, concurrency, timeout, back-off and
fallback as track descriptions. Both carry the episode's id in ``episode_id``.
"""

from __future__ import annotations

from streamer.describe.fallback import FALLBACK_MODEL, fallback_answer
from streamer.messages import Description, Episode
from streamer.summary import TrackSummary, summarize


def episode_description(ep: Episode) -> tuple[Description, TrackSummary]:
    """The fallback description of an ended episode and the summary the LLM is given."""
    summary = summarize(ep.trajectory) if ep.trajectory else TrackSummary.point(0.0, 0.0)
    answer = fallback_answer(summary)
    why = {"cleared": "", "track_lost": ", until the face was lost"}.get(
        ep.reason or "", ", until the stream ended"
    )
    text = (
        f"{ep.rule.capitalize()} for {ep.duration_s:.1f} s{why} (mean valence "
        f"{ep.valence.mean:+.2f}, arousal {ep.arousal.mean:+.2f}). {answer.text}"
    )
    desc = Description(
        id=f"{ep.id}:description",
        camera=ep.camera,
        track_id=ep.track_id,
        t=ep.t,
        valence=summary.mean_valence,
        arousal=summary.mean_arousal,
        basic=answer.basic,
        complex=answer.complex,
        text=text,
        source="fallback",
        model=FALLBACK_MODEL,
        wall_time=ep.wall_time,
        episode_id=ep.id,
    )
    return desc, summary

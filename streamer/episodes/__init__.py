"""Affect episodes and room mood over smoothed VA trajectories (docs/episodes.md)."""

from __future__ import annotations

import contextlib
from typing import Any

from streamer.bus import EventBus
from streamer.episodes.config import EpisodeRule, EpisodesConfig, MoodConfig, RuleCondition
from streamer.episodes.stage import EpisodeStage


async def enter_episodes(
    stack: contextlib.AsyncExitStack, cfg: Any, bus: EventBus, describer: Any = None
) -> EpisodeStage | None:
    """Start the episodes stage of an ``AppConfig`` on ``stack`` (None when not configured).

    Ended episodes go to ``describer`` (when given and ``episodes.describe`` is on).
    """
    episodes: EpisodesConfig | None = cfg.episodes
    mood: MoodConfig | None = cfg.mood
    if episodes is None and (mood is None or not mood.enabled):
        return None
    on_end = None
    if describer is not None and episodes is not None and episodes.describe:
        from streamer.episodes.describe import describer_hook

        on_end = describer_hook(describer)
    return await stack.enter_async_context(EpisodeStage(bus, episodes, mood, on_end))


__all__ = [
    "EpisodeRule",
    "EpisodeStage",
    "EpisodesConfig",
    "MoodConfig",
    "RuleCondition",
    "enter_episodes",
]

"""Affect episodes and room mood over smoothed VA trajectories (docs/episodes.md)."""

from __future__ import annotations

from streamer.episodes.config import EpisodeRule, EpisodesConfig, MoodConfig, RuleCondition
from streamer.episodes.stage import EpisodeStage

__all__ = [
    "EpisodeRule",
    "EpisodeStage",
    "EpisodesConfig",
    "MoodConfig",
    "RuleCondition",
]

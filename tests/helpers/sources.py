"""Helpers of the sources tests: status collection and polling with a deadline."""

from __future__ import annotations

from collections.abc import Callable

from streamer.bus import EventBus, Subscription
from streamer.messages import CameraState, CameraStatus
from tests.helpers.wait import wait_until

__all__ = ["StatusLog", "drain_statuses", "wait_until"]


def drain_statuses(sub: Subscription) -> list[CameraStatus]:
    out = []
    while (msg := sub.get_nowait()) is not None:
        if isinstance(msg, CameraStatus):
            out.append(msg)
    return out


class StatusLog:
    """Collects a bus's CameraStatus messages (call :meth:`poll` from the loop)."""

    def __init__(self, bus: EventBus) -> None:
        self.sub = bus.subscribe(
            "test-status", maxsize=10_000, accept=lambda m: isinstance(m, CameraStatus)
        )
        self.seen: list[CameraStatus] = []

    def poll(self) -> list[CameraStatus]:
        self.seen.extend(drain_statuses(self.sub))
        return self.seen

    def states(self, camera: str | None = None) -> list[CameraState]:
        return [s.state for s in self.poll() if camera is None or s.camera == camera]

    async def wait_for(
        self, pred: Callable[[CameraStatus], bool], timeout_s: float
    ) -> CameraStatus:
        """First status (old or new) matching ``pred``; fails after ``timeout_s``."""
        try:
            return await wait_until(
                lambda: next((st for st in self.poll() if pred(st)), None),
                timeout_s,
                "a matching status",
            )
        except AssertionError as err:
            seen = [(s.camera, s.state.value, s.detail) for s in self.seen]
            raise AssertionError(f"{err}; saw {seen}") from None

"""A real pipeline with a web sink built by the test (its timings, a loopback bind)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from streamer.compose import Composition, SinkContext, SinkOptions, build_pipeline
from streamer.config import AppConfig
from streamer.store import default_store
from streamer.web.config import WebConfig
from streamer.web.server import WebSink


@asynccontextmanager
async def web_run(
    web_cfg: WebConfig, cfg: AppConfig | None = None, /, **kw: Any
) -> AsyncIterator[tuple[Composition, WebSink]]:
    """Enter a composition (real models) whose web sink is ``WebSink(web_cfg, ..., **kw)``."""
    cfg = (cfg or AppConfig()).model_copy(update={"web": web_cfg})
    made: list[WebSink] = []

    def web_sink(ctx: SinkContext) -> WebSink:
        made.append(WebSink(web_cfg, ctx.bus, ctx.view, **kw))
        return made[-1]

    pipe = build_pipeline(cfg, default_store())
    async with Composition(pipe, SinkOptions(replay=True), overrides={"web": web_sink}) as run:
        (sink,) = made
        yield run, sink

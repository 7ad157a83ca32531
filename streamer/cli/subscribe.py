"""``streamer subscribe``: a live terminal view of a running analyzer, or raw JSON lines.

    streamer subscribe --host 127.0.0.1 --port 1883 [--prefix streamer] [--camera C] [--json]

The view, redrawn in place: per camera its status, face count and room mood; the open
episodes (rule, track, how long); one row per track: valence, arousal, quadrant, latest
description and the age of the last update. ``--json`` prints one line per accepted
message: ``{"topic": ..., "payload": ...}``. Hostile or malformed payloads are rejected
with one truncated warning on stderr. When nothing came for ``--silence-s`` (10 s), it
says which prefix it listens on and which prefixes the broker has (``+/available``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from streamer.config import format_validation_error, load_config
from streamer.errors import ConfigError
from streamer.publish.config import MqttConfig

if TYPE_CHECKING:
    from rich.console import Console

    from streamer.publish.subscriber import SubscriberView

logger = logging.getLogger(__name__)

REFRESH_S = 0.5  # table refresh interval (ages tick even without messages)
RENDER_EVERY_S = 0.25  # a burst of messages redraws the view at most this often
SILENCE_S = 10.0  # with no message this long, say what it listens to and what exists
VIEW_CHROME_LINES = 6  # title, borders, header and caption around the tracks' rows


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "subscribe",
        help="watch a running analyzer over MQTT (live table or JSON lines)",
        description="Subscribe to an analyzer's MQTT topics and show, redrawn in place, "
        "per camera its status, face count and mood, the open episodes, and one row per "
        "track.",
    )
    p.add_argument("--config", type=Path, help="take broker settings from this YAML's mqtt:")
    p.add_argument("--host", help="broker host (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="broker port (default 1883)")
    p.add_argument("--prefix", help="topic prefix (default streamer)")
    p.add_argument("--camera", help="only this camera")
    p.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    p.add_argument("--username", help="broker user name")
    p.add_argument("--password-env", help="environment variable holding the password")
    p.add_argument("--password-file", type=Path, help="file holding the password")
    p.add_argument("--ca-file", type=Path, help="enable TLS; trust this CA (PEM)")
    p.add_argument("--cert-file", type=Path, help="TLS client certificate (PEM)")
    p.add_argument("--key-file", type=Path, help="TLS client key (PEM)")
    p.add_argument(
        "--max-messages",
        type=int,
        default=0,
        help="exit after this many accepted messages (0: run until interrupted)",
    )
    p.add_argument(
        "--silence-s",
        type=float,
        default=SILENCE_S,
        metavar="S",
        help="with no message for S seconds, say which prefix it listens on and which "
        "prefixes the broker has (+/available)",
    )
    p.set_defaults(func=cmd_subscribe)


def mqtt_config_from_args(args: argparse.Namespace) -> MqttConfig:
    """The broker settings: the config file's ``mqtt:`` (if any), overridden by flags.

    Raises:
        ConfigError: invalid combination (e.g. a user without a password source).
    """
    data: dict[str, Any] = {}
    if args.config is not None:
        app = load_config(args.config)
        if app.mqtt is not None:
            data = app.mqtt.model_dump(exclude_unset=True)
    flags = {
        "host": args.host,
        "port": args.port,
        "prefix": args.prefix,
        "username": args.username,
        "password_env": args.password_env,
        "password_file": args.password_file,
    }
    data.update({k: v for k, v in flags.items() if v is not None})
    if args.ca_file or args.cert_file or args.key_file:
        tls = dict(data.get("tls") or {})
        for key in ("ca_file", "cert_file", "key_file"):
            if getattr(args, key) is not None:
                tls[key] = getattr(args, key)
        data["tls"] = tls
    try:
        return MqttConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, "subscribe", {})) from err


async def _run(args: argparse.Namespace, cfg: MqttConfig) -> int:
    # aiomqtt and jsonschema: imported by this command only, not at every CLI start.
    from streamer.publish.subscriber import SubscriberView, mqtt_messages

    view = SubscriberView(cfg.prefix, camera=args.camera)
    limit = max(0, args.max_messages)
    heard = asyncio.Event()  # any message at all (accepted or not)
    hint = asyncio.create_task(_hint_when_silent(cfg, view, heard, args), name="silence-hint")
    try:
        if args.json:
            async with contextlib.aclosing(mqtt_messages(cfg, view.subscriptions())) as messages:
                async for topic, payload in messages:
                    heard.set()
                    inbound = view.handle(topic, payload)
                    if inbound is None:
                        continue
                    line = json.dumps({"topic": inbound.topic, "payload": inbound.record})
                    sys.stdout.write(line + "\n")
                    sys.stdout.flush()
                    if limit and view.accepted >= limit:
                        break
            return 0
        await _live_view(cfg, view, heard, limit)
        return 0
    finally:
        hint.cancel()
        await asyncio.gather(hint, return_exceptions=True)


async def _live_view(
    cfg: MqttConfig, view: SubscriberView, heard: asyncio.Event, limit: int
) -> None:
    """The view on stdout, redrawn in place (at most every RENDER_EVERY_S, and every
    REFRESH_S without messages: ages tick)."""
    from rich.live import Live

    from streamer.publish.subscriber import Payload, mqtt_messages

    with Live(view.render(), refresh_per_second=4, transient=False) as live, _logs_on(live.console):
        messages = mqtt_messages(cfg, view.subscriptions())
        next_msg: asyncio.Task[tuple[str, Payload]] | None = None
        drawn = time.monotonic()

        def redraw() -> None:
            # Only the track rows that fit the terminal (under the cameras and episodes):
            # a flood of messages or tracks costs no more than a screenful per redraw.
            nonlocal drawn
            rows = max(1, live.console.size.height - view.fixed_lines() - VIEW_CHROME_LINES)
            live.update(view.render(max_rows=rows))
            drawn = time.monotonic()

        try:
            while True:
                if next_msg is None:
                    next_msg = asyncio.ensure_future(anext(messages))
                done, _ = await asyncio.wait({next_msg}, timeout=REFRESH_S)
                if next_msg in done:
                    try:
                        topic, payload = next_msg.result()
                    except StopAsyncIteration:
                        break
                    next_msg = None
                    heard.set()
                    view.hint = ""
                    view.handle(topic, payload)
                if limit and view.accepted >= limit:
                    break
                if not done or time.monotonic() - drawn >= RENDER_EVERY_S:
                    redraw()
        finally:
            redraw()
            if next_msg is not None:
                next_msg.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await next_msg
            await messages.aclose()


@contextlib.contextmanager
def _logs_on(console: Console) -> Iterator[None]:
    """While the view is live on a terminal, log lines go through its console (drawn
    above the view). Written straight to the same terminal, a line would move the cursor
    under the view's feet, and each redraw would leave an old frame above the new one."""
    from rich.logging import RichHandler

    swapped: list[tuple[RichHandler, Console]] = []
    if console.is_terminal and sys.stderr.isatty():
        for handler in logging.getLogger().handlers:
            if isinstance(handler, RichHandler):
                swapped.append((handler, handler.console))
                handler.console = console
    try:
        yield
    finally:
        for handler, old in swapped:
            handler.console = old


async def _hint_when_silent(
    cfg: MqttConfig, view: SubscriberView, heard: asyncio.Event, args: argparse.Namespace
) -> None:
    """After ``--silence-s`` with no message: which prefix this listens on, and which
    prefixes have an analyzer on the broker (on the view, and on stderr with --json)."""
    from streamer.errors import StreamerError
    from streamer.publish.subscriber import available_prefixes

    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(args.silence_s):
            await heard.wait()
            return
    listening = " and ".join(f"'{t}'" for t in view.subscriptions())
    try:
        found = await available_prefixes(cfg)
        seen = ", ".join(f"{p} ({word})" for p, word in found.items()) or "none"
    except StreamerError as err:
        seen = f"could not be listed ({err})"
    if heard.is_set():
        return
    view.hint = (
        f"no message on {listening} for {args.silence_s:g} s; prefixes with an analyzer "
        f"on this broker (+/available): {seen}"
    )
    if args.json:
        logger.warning("subscribe: %s", view.hint)


def cmd_subscribe(args: argparse.Namespace) -> int:
    cfg = mqtt_config_from_args(args)
    return asyncio.run(_run(args, cfg))

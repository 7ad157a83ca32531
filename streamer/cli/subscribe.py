"""``streamer subscribe``: a live terminal view of a running analyzer, or raw JSON lines.

    streamer subscribe --host 127.0.0.1 --port 1883 [--prefix streamer] [--camera C] [--json]

The table has one row per track: valence, arousal, quadrant, latest description and the
age of the last update. ``--json`` prints one line per accepted message:
``{"topic": ..., "payload": ...}``. Hostile or malformed payloads are rejected with one
truncated warning on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from streamer.config import format_validation_error, load_config
from streamer.errors import ConfigError
from streamer.publish.config import MqttConfig

if TYPE_CHECKING:
    from streamer.publish.subscriber import SubscriberView

logger = logging.getLogger(__name__)

REFRESH_S = 0.5  # table redraw interval: ages tick without messages, floods redraw no faster
TABLE_CHROME_LINES = 7  # title, borders, header and caption around the table's rows


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "subscribe",
        help="watch a running analyzer over MQTT (live table or JSON lines)",
        description="Subscribe to an analyzer's MQTT topics and show one row per track.",
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
    if args.json:
        async with contextlib.aclosing(mqtt_messages(cfg, view.subscriptions())) as messages:
            async for topic, payload in messages:
                inbound = view.handle(topic, payload)
                if inbound is None:
                    continue
                line = json.dumps({"topic": inbound.topic, "payload": inbound.record})
                sys.stdout.write(line + "\n")
                sys.stdout.flush()
                if limit and view.accepted >= limit:
                    break
        return 0
    await _run_table(view, cfg, limit)
    return 0


async def _run_table(view: SubscriberView, cfg: MqttConfig, limit: int) -> None:
    """The live table until ``limit`` messages were accepted (0: until interrupted)."""
    from rich.live import Live

    from streamer.publish.subscriber import Payload, mqtt_messages

    with Live(view.render(), refresh_per_second=4, transient=False) as live:
        drawn = float("-inf")

        def redraw(force: bool = False) -> None:
            # Never once per message, and only the rows that fit the terminal: a flood
            # of messages or tracks costs no more than a screenful every REFRESH_S.
            nonlocal drawn
            if force or time.monotonic() - drawn >= REFRESH_S:
                rows = max(1, live.console.size.height - TABLE_CHROME_LINES)
                live.update(view.render(max_rows=rows))
                drawn = time.monotonic()

        messages = mqtt_messages(cfg, view.subscriptions())
        next_msg: asyncio.Task[tuple[str, Payload]] | None = None
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
                    view.handle(topic, payload)
                finished = bool(limit and view.accepted >= limit)
                redraw(force=finished)
                if finished:
                    break
        finally:
            if next_msg is not None:
                next_msg.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await next_msg
            await messages.aclose()


def cmd_subscribe(args: argparse.Namespace) -> int:
    cfg = mqtt_config_from_args(args)
    return asyncio.run(_run(args, cfg))

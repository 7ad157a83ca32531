"""A stand-in analyzer process for the publish tests: a bus, an MqttPublisher, and
synthetic VA samples for one track at 20 Hz media time until killed.

Usage: python publisher_proc.py HOST PORT PREFIX
"""

from __future__ import annotations

import asyncio
import sys

from streamer.bus import EventBus
from streamer.messages import VASample
from streamer.publish.config import MqttConfig
from streamer.publish.mqtt import MqttPublisher


async def main(host: str, port: int, prefix: str) -> None:
    cfg = MqttConfig(
        host=host,
        port=port,
        prefix=prefix,
        keepalive_s=5,
        reconnect_min_s=0.1,
        reconnect_max_s=0.5,
    )
    bus = EventBus()
    async with MqttPublisher(cfg, bus, ["proc"]) as pub:
        await pub.wait_connected()
        print("connected", flush=True)
        frame = 0
        while True:
            t = frame / 20
            bus.publish_nowait(
                VASample(
                    camera="proc",
                    frame=frame,
                    t=t,
                    track_id=1,
                    box=(0.0, 0.0, 64.0, 64.0),
                    valence=0.1,
                    arousal=0.2,
                    valence_raw=0.1,
                    arousal_raw=0.2,
                    variance=(0.01, 0.01),
                    model="synthetic",
                )
            )
            frame += 1
            await asyncio.sleep(0.05)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))

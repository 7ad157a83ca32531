"""Home Assistant MQTT discovery (behind ``mqtt.homeassistant.enabled``).

Per camera one device with a face-count sensor; per live track a valence and an arousal
sensor that read the track's VA topic. Track sensors are removed (empty retained config)
when the track is lost, and everything is re-announced when Home Assistant's status
topic says ``online`` (it restarted and forgot the non-retained state).
"""

from __future__ import annotations

import json
import logging

from streamer.errors import InboundError
from streamer.publish.config import HomeAssistantConfig
from streamer.publish.payloads import (
    AVAILABLE_ONLINE,
    QOS_RELIABLE,
    Outbound,
    Topics,
    decode_text,
    topic_level,
)

logger = logging.getLogger(__name__)

HA_STATUS_MAX_BYTES = 64  # "online"/"offline"; anything longer is hostile or a mistake

_AVAILABILITY_TEMPLATE = "{{ 'online' if value == '" + AVAILABLE_ONLINE + "' else 'offline' }}"


def _device(cfg: HomeAssistantConfig, camera: str) -> dict[str, object]:
    return {
        "identifiers": [f"{cfg.node_id}_{topic_level(camera)}"],
        "name": f"streamer {camera}",
        "manufacturer": "streamer",
        "model": "facial-affect analyzer",
    }


def _config(cfg: HomeAssistantConfig, object_id: str, body: dict[str, object]) -> Outbound:
    topic = f"{cfg.discovery_prefix}/sensor/{cfg.node_id}/{object_id}/config"
    payload = json.dumps(body, separators=(",", ":")).encode("utf-8")
    return Outbound("discovery", topic, payload, QOS_RELIABLE, True)


def _removal(cfg: HomeAssistantConfig, object_id: str) -> Outbound:
    topic = f"{cfg.discovery_prefix}/sensor/{cfg.node_id}/{object_id}/config"
    return Outbound("discovery", topic, b"", QOS_RELIABLE, True)


def _common(cfg: HomeAssistantConfig, topics: Topics, camera: str) -> dict[str, object]:
    return {
        "availability_topic": topics.available,
        "availability_template": _AVAILABILITY_TEMPLATE,
        "device": _device(cfg, camera),
        "state_class": "measurement",
    }


def camera_discovery(cfg: HomeAssistantConfig, topics: Topics, camera: str) -> list[Outbound]:
    """The face-count sensor of one camera."""
    object_id = f"{topic_level(camera)}_faces"
    body = {
        "name": "Faces",
        "unique_id": f"{cfg.node_id}_{object_id}",
        "state_topic": topics.face_count(camera),
        "value_template": "{{ value_json.count }}",
        "icon": "mdi:face-recognition",
        **_common(cfg, topics, camera),
    }
    return [_config(cfg, object_id, body)]


def _track_object_ids(camera: str, track_id: int) -> tuple[str, str]:
    base = f"{topic_level(camera)}_track{int(track_id)}"
    return f"{base}_valence", f"{base}_arousal"


def track_discovery(
    cfg: HomeAssistantConfig, topics: Topics, camera: str, track_id: int
) -> list[Outbound]:
    """Valence and arousal sensors of one track (they read its VA topic)."""
    out = []
    object_ids = _track_object_ids(camera, track_id)
    for object_id, field in zip(object_ids, ("valence", "arousal"), strict=True):
        body: dict[str, object] = {
            "name": f"Track {int(track_id)} {field}",
            "unique_id": f"{cfg.node_id}_{object_id}",
            "state_topic": topics.va(camera, track_id),
            "value_template": "{{ value_json." + field + " }}",
            "icon": "mdi:emoticon-outline" if field == "valence" else "mdi:lightning-bolt",
            **_common(cfg, topics, camera),
        }
        if cfg.expire_after_s:
            body["expire_after"] = cfg.expire_after_s
        out.append(_config(cfg, object_id, body))
    return out


def track_removal(cfg: HomeAssistantConfig, camera: str, track_id: int) -> list[Outbound]:
    """Empty retained configs: Home Assistant deletes the track's sensors."""
    return [_removal(cfg, object_id) for object_id in _track_object_ids(camera, track_id)]


def parse_ha_status(payload: bytes) -> str:
    """Home Assistant's birth/will message: ``online`` or ``offline``.

    Raises:
        InboundError: anything else (too long, not UTF-8, another word).
    """
    text = decode_text(payload, HA_STATUS_MAX_BYTES).strip()
    if text not in ("online", "offline"):
        raise InboundError(f"expected 'online' or 'offline', got {text[:20]!r}")
    return text

"""MQTT and Home Assistant side of episodes and room mood.

Per camera and rule a retained ``<prefix>/<camera>/rules/<rule>/active`` (``ON`` while
any episode of the rule is open on that camera, else ``OFF``) and, with discovery on, a
``binary_sensor`` that reads it ("someone in distress"); per camera two ``sensor``
entities read the retained mood (valence and arousal). On connect the publisher
subscribes to its own retained ``binary_sensor`` discovery configs: one whose rule is no
longer configured gets an empty retained config, so Home Assistant deletes it.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable, Sequence

from streamer.errors import InboundError
from streamer.messages import Episode, Mood
from streamer.publish import homeassistant as ha
from streamer.publish.config import MqttConfig
from streamer.publish.payloads import (
    QOS_RELIABLE,
    Outbound,
    Topics,
    decode_json,
    encode_message,
    topic_level,
)

logger = logging.getLogger(__name__)

RULE_ON = "ON"
RULE_OFF = "OFF"
CONFIG_MAX_BYTES = 16 * 1024  # our discovery configs are far smaller

_AVAILABILITY_TEMPLATE = ha._AVAILABILITY_TEMPLATE


def _object_id(camera: str, rule: str) -> str:
    return f"{topic_level(camera)}_rule_{topic_level(rule)}"


def _config_topic(discovery_prefix: str, component: str, node_id: str, object_id: str) -> str:
    return f"{discovery_prefix}/{component}/{node_id}/{object_id}/config"


def rule_discovery(cfg: MqttConfig, topics: Topics, camera: str, rule: str) -> Outbound:
    """The binary sensor of one rule on one camera."""
    hacfg = cfg.homeassistant
    object_id = _object_id(camera, rule)
    body = {
        "name": rule.replace("_", " ").replace("-", " ").capitalize(),
        "unique_id": f"{hacfg.node_id}_{object_id}",
        "state_topic": topics.rule_active(camera, rule),
        "payload_on": RULE_ON,
        "payload_off": RULE_OFF,
        "icon": "mdi:account-alert",
        "availability_topic": topics.available,
        "availability_template": _AVAILABILITY_TEMPLATE,
        "device": ha._device(hacfg, camera),
    }
    topic = _config_topic(hacfg.discovery_prefix, "binary_sensor", hacfg.node_id, object_id)
    return Outbound("discovery", topic, json.dumps(body, separators=(",", ":")).encode(), 1, True)


def mood_discovery(cfg: MqttConfig, topics: Topics, camera: str) -> list[Outbound]:
    """Mood valence and arousal sensors of one camera (they read the retained mood)."""
    hacfg = cfg.homeassistant
    out = []
    for field in ("valence", "arousal"):
        object_id = f"{topic_level(camera)}_mood_{field}"
        body = {
            "name": f"Mood {field}",
            "unique_id": f"{hacfg.node_id}_{object_id}",
            "state_topic": topics.mood(camera),
            "value_template": "{{ value_json." + field + " }}",
            "state_class": "measurement",
            "icon": "mdi:account-group",
            "availability_topic": topics.available,
            "availability_template": _AVAILABILITY_TEMPLATE,
            "device": ha._device(hacfg, camera),
        }
        topic = _config_topic(hacfg.discovery_prefix, "sensor", hacfg.node_id, object_id)
        payload = json.dumps(body, separators=(",", ":")).encode()
        out.append(Outbound("discovery", topic, payload, QOS_RELIABLE, True))
    return out


def rule_state(topics: Topics, camera: str, rule: str, on: bool) -> Outbound:
    payload = (RULE_ON if on else RULE_OFF).encode()
    return Outbound("rule_state", topics.rule_active(camera, rule), payload, QOS_RELIABLE, True)


def rule_of_state_topic(topics: Topics, topic: str) -> str | None:
    """The rule of a ``<prefix>/<camera>/rules/<rule>/active`` topic, or None."""
    head = topics.prefix + "/"
    if not topic.startswith(head) or not topic.endswith("/active"):
        return None
    parts = topic[len(head) : -len("/active")].split("/")
    if len(parts) != 3 or parts[1] != "rules":
        return None
    return parts[2]


class EpisodePublishing:
    """The episode and mood state of an :class:`MqttPublisher`.

    Args:
        cfg: the ``mqtt`` section.
        topics: the publisher's topics.
        rules: names of the configured rules (their sensors exist from the start).
        mood: whether the mood sensors are announced.
    """

    def __init__(self, cfg: MqttConfig, topics: Topics, rules: Sequence[str], mood: bool) -> None:
        self.cfg = cfg
        self.topics = topics
        self.rules = list(rules)
        self.mood = mood
        self.open: Counter[tuple[str, str]] = Counter()
        self.open_ids: set[str] = set()
        self.removed = 0  # stale rule sensors removed from Home Assistant
        self._retained: dict[str, Outbound] = {}  # topic -> latest mood / rule state

    @property
    def discovery_filter(self) -> str:
        """Where our retained binary-sensor configs live (subscribed on connect)."""
        hacfg = self.cfg.homeassistant
        return _config_topic(hacfg.discovery_prefix, "binary_sensor", hacfg.node_id, "+")

    def encode(self, msg: Episode | Mood) -> tuple[list[Outbound], list[Outbound]]:
        """(events, retained states) to publish for ``msg``."""
        if isinstance(msg, Mood):
            return [], [self._keep(encode_message(msg, self.topics))]
        events = [encode_message(msg, self.topics)]
        key = (msg.camera, msg.rule)
        if msg.state == "started" and msg.id not in self.open_ids:
            self.open_ids.add(msg.id)
            self.open[key] += 1
        elif msg.state == "ended" and msg.id in self.open_ids:
            self.open_ids.discard(msg.id)
            self.open[key] -= 1
        return events, [
            self._keep(rule_state(self.topics, msg.camera, msg.rule, self.open[key] > 0))
        ]

    def _keep(self, item: Outbound) -> Outbound:
        self._retained[item.topic] = item
        return item

    def retained(self) -> list[Outbound]:
        """The latest mood and rule state of every camera (again after a reconnect: a
        restarted broker may have lost them)."""
        return list(self._retained.values())

    def announce(self, cameras: Iterable[str]) -> tuple[list[Outbound], list[Outbound]]:
        """(discovery configs, rule states) of ``cameras``."""
        configs: list[Outbound] = []
        states: list[Outbound] = []
        for camera in cameras:
            for rule in self.rules:
                if self.cfg.homeassistant.enabled:
                    configs.append(rule_discovery(self.cfg, self.topics, camera, rule))
                on = self.open[(camera, rule)] > 0
                states.append(self._keep(rule_state(self.topics, camera, rule, on)))
            if self.mood and self.cfg.homeassistant.enabled:
                configs.extend(mood_discovery(self.cfg, self.topics, camera))
        return configs, states

    def stale_config(self, topic: str, payload: bytes) -> Outbound | None:
        """An empty retained config for a retained rule sensor whose rule is gone.

        Raises:
            InboundError: the payload is not a JSON object of bounded size.
        """
        if not payload:
            return None  # already removed
        body = decode_json(payload, CONFIG_MAX_BYTES)
        if not isinstance(body, dict):
            raise InboundError("discovery config is not a JSON object")
        state_topic = body.get("state_topic")
        if not isinstance(state_topic, str):
            return None
        rule = rule_of_state_topic(self.topics, state_topic)
        if rule is None or rule in {topic_level(r) for r in self.rules}:
            return None
        self.removed += 1
        logger.info("MQTT: rule %r is no longer configured; removing its sensor", rule)
        return Outbound("discovery", topic, b"", QOS_RELIABLE, True)

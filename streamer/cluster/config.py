"""Config of cluster mode (``cluster:``): where the Ray cluster is and what a camera needs.

    cluster:
      engine: ray
      address: auto               # RAY_ADDRESS, or ray://host:10001, or host:6379
      namespace: streamer
      camera_resources: {num_cpus: 1}

Cluster mode needs an ``mqtt:`` section: MQTT is the data plane between the machines
(checked by :class:`~streamer.config.AppConfig`).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from streamer.config_base import StrictModel

ADDRESS_PATTERN = re.compile(r"^(auto|local|ray://[^\s/:]+(:\d{1,5})?|[^\s/:]+:\d{1,5})$")


def check_address(value: str) -> str:
    """``value`` when it is a cluster address (auto, local, ray://host[:port], host:port).

    Raises:
        ValueError: saying what is expected and what was given.
    """
    if not ADDRESS_PATTERN.match(value):
        raise ValueError(f"expected auto, local, ray://host:port or host:port, got {value!r}")
    return value


class CameraResources(StrictModel):
    """What one camera actor asks of a node (Ray resources)."""

    num_cpus: float = Field(1.0, ge=0.0, le=1024.0, description="logical CPUs per camera actor")
    num_gpus: float = Field(0.0, ge=0.0, le=64.0, description="GPUs per camera actor")
    memory_mb: float | None = Field(
        None, gt=0.0, description="memory reserved per camera actor, MiB (Ray `memory`)"
    )
    custom: dict[str, float] = Field(
        default_factory=dict,
        description="custom Ray resources (e.g. {site_a: 1} to pin cameras to labelled nodes)",
    )


class ClusterConfig(StrictModel):
    """Run every camera as its own actor on a Ray cluster (needs the `cluster` extra)."""

    engine: Literal["ray"] = Field("ray", description="distributed engine (only Ray)")
    address: str = Field(
        "auto",
        description="cluster address: auto (RAY_ADDRESS or the local cluster), "
        "ray://host:10001 (Ray client), host:6379 (GCS), or local (a Ray instance started "
        "in this process, for trying it out)",
    )
    namespace: str = Field(
        "streamer",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Ray namespace of the camera actors (one per deployment)",
    )
    camera_resources: CameraResources = Field(
        default_factory=CameraResources,
        description="what one camera actor asks of a node",
    )
    connect_timeout_s: float = Field(
        30.0, gt=0.0, le=600.0, description="give up connecting to the cluster after this"
    )
    start_timeout_s: float = Field(
        120.0,
        gt=0.0,
        le=3600.0,
        description="a camera actor not running after this (no node has room) is an error",
    )
    lease_s: float = Field(
        5.0,
        ge=0.5,
        le=60.0,
        description="camera lease: a camera's actor publishes only while it holds a lease "
        "renewed every lease_s / 4; a replacement waits until the old lease ran out",
    )

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        return check_address(value)

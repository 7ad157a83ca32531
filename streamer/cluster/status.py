"""``streamer cluster status``: which camera runs on which node, its state, restarts, fps.

Asks every camera actor of the config (by name, in the namespace) and the lease
registry; an actor that does not answer within the timeout (restarting, or its node is
gone) is shown as such.
"""

from __future__ import annotations

import contextlib
from typing import Any

from streamer.cluster.actor import actor_name
from streamer.cluster.config import ClusterConfig
from streamer.cluster.lease import REGISTRY_NAME
from streamer.config import AppConfig

ASK_TIMEOUT_S = 5.0  # an actor that does not answer within this is "not answering" (s)


def collect(
    cfg: AppConfig, ccfg: ClusterConfig, timeout_s: float = ASK_TIMEOUT_S
) -> dict[str, Any]:
    """The status of every camera of ``cfg`` on the cluster (Ray must be connected)."""
    import ray

    grants: dict[str, Any] = {}
    with contextlib.suppress(Exception):
        registry = ray.get_actor(REGISTRY_NAME, namespace=ccfg.namespace)
        snapshot: Any = ray.get(registry.snapshot.remote(), timeout=timeout_s)
        grants = dict(snapshot)
    refs: dict[Any, str] = {}
    rows: dict[str, dict[str, Any]] = {}
    for cam in cfg.cameras:
        rows[cam.name] = {"camera": cam.name, "actor": actor_name(cam.name), "state": "not running"}
        try:
            actor = ray.get_actor(actor_name(cam.name), namespace=ccfg.namespace)
        except ValueError:
            continue
        rows[cam.name]["state"] = "not answering"
        refs[actor.status.remote()] = cam.name
    ready = ray.wait(list(refs), num_returns=len(refs), timeout=timeout_s)[0] if refs else []
    for ref in ready:
        name = refs[ref]
        try:
            st = ray.get(ref)
        except Exception as err:  # the actor died while answering
            rows[name]["state"] = f"error: {type(err).__name__}"
            continue
        rows[name].update(st.to_record())
    for name, row in rows.items():
        held = grants.get(name)
        row["restarts"] = max(0, int(held["grants"]) - 1) if held else None
    return {"namespace": ccfg.namespace, "cameras": [rows[c.name] for c in cfg.cameras]}


def render(report: dict[str, Any]) -> Any:
    """A rich table of :func:`collect`'s report."""
    from rich.table import Table

    table = Table(title=f"cameras in namespace {report['namespace']}")
    for col in ("camera", "node", "state", "restarts", "fps", "frames", "published"):
        table.add_column(col, justify="right" if col in ("restarts", "fps", "frames") else "left")
    for row in report["cameras"]:
        node = row.get("node_id", "")
        table.add_row(
            row["camera"],
            f"{row.get('node_ip', '')} {node[:12]}".strip() or "-",
            row["state"],
            "-" if row.get("restarts") is None else str(row["restarts"]),
            f"{row['fps']:.1f}" if "fps" in row else "-",
            str(row.get("frames", "-")),
            str(row.get("published", "-")),
        )
    return table

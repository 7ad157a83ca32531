#!/usr/bin/env bash
# The GPU path, checked in one command on a machine with an NVIDIA GPU and nothing else
# prepared (Python >= 3.11 and the driver only). Prints one JSON object on stdout:
#   ./tools/gpu_check.sh > gpu.json          (progress goes to stderr; ~15 minutes)
#
# 1. .venv as tools/setup.sh makes it (no apt packages), then the GPU packages from PyPI:
#    onnxruntime-gpu (replacing the CPU onnxruntime), tensorrt and cuda-python
#    (the `tensorrt` extra). No torch: no GPU part needs it.
# 2. The GPU tests (pytest -m gpu): VA networks on onnxruntime-CUDA and TensorRT FP16
#    against the CPU, YuNet on onnxruntime-CUDA against OpenCV, NVDEC decoding.
# 3. bench model (onnx = CUDA provider, tensorrt) and bench replay / bench crowd with the
#    VA model and YuNet on the GPU backends.
# 4. bench cameras on NVDEC (hwaccel: cuda) with the CUDA and the TensorRT providers: at
#    5 analysed frames a second and at every frame (needs the GStreamer RTSP server:
#    installed with apt when this runs as root; else its entry says why it did not run).
# Offline, set STREAMER_MODEL_MIRROR as for tools/setup.sh.
set -uo pipefail
cd "$(dirname "$0")/.."
exec 3>&1 1>&2  # everything but the final JSON goes to stderr
OUT="$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")"
START=$(date +%s)

step() { echo "== $* ($(( $(date +%s) - START )) s)"; }

step "setup (.venv, models)"
STREAMER_SKIP_APT=1 timeout 240 ./tools/setup.sh >"$OUT/setup.log" 2>&1 || tail -20 "$OUT/setup.log"
PY=.venv/bin/python
step "GPU packages from PyPI"
timeout 240 $PY -m pip install -q --disable-pip-version-check \
  onnxruntime-gpu "tensorrt>=10" "cuda-python>=12" >"$OUT/pip.log" 2>&1 || tail -20 "$OUT/pip.log"
# onnxruntime (CPU) and onnxruntime-gpu install the same module: keep only the GPU build.
if $PY -m pip show -q onnxruntime >/dev/null 2>&1; then
  $PY -m pip uninstall -y -q onnxruntime >>"$OUT/pip.log" 2>&1
  timeout 120 $PY -m pip install -q --force-reinstall --no-deps onnxruntime-gpu >>"$OUT/pip.log" 2>&1
fi

cat >"$OUT/gpu_ort.yaml" <<'YAML'
faces:
  detector: {backend: onnxruntime, device: cuda}
affect:
  runtime: {type: onnx, device: cuda}
YAML
cat >"$OUT/gpu_trt.yaml" <<'YAML'
faces:
  detector: {backend: onnxruntime, device: tensorrt}
affect:
  runtime: {type: tensorrt, fp16: true}
YAML

step "GPU tests"
timeout 180 $PY -m pytest -q -p no:cacheprovider -m gpu tests/gpu -rs \
  --junitxml="$OUT/gpu_tests.xml" >"$OUT/gpu_tests.log" 2>&1
tail -15 "$OUT/gpu_tests.log"

step "bench model"
timeout 120 .venv/bin/streamer -q bench model --backend onnx --backend tensorrt \
  --batch 1 --batch 32 --seconds 1 --out "$OUT/bench_model.json" >/dev/null 2>"$OUT/bench_model.log"
VIDEO=models/cache/single_face.mp4
for name in gpu_ort gpu_trt; do
  step "bench replay ($name)"
  timeout 90 .venv/bin/streamer -q bench replay "$VIDEO" --config "$OUT/$name.yaml" --repeat 2 \
    >"$OUT/replay_$name.json" 2>"$OUT/replay_$name.log"
  step "bench crowd 5x5 ($name)"
  timeout 150 .venv/bin/streamer -q bench crowd --grid 5 --frames 72 --repeat 1 \
    --config "$OUT/$name.yaml" >"$OUT/crowd_$name.json" 2>"$OUT/crowd_$name.log"
done

step "GStreamer RTSP server (bench cameras)"
if ! $PY -c "from streamer.testing.sources import gst_rtsp_unavailable as u; raise SystemExit(bool(u()))" 2>/dev/null \
  && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  timeout 240 apt-get install -y -q python3-gi gir1.2-gst-rtsp-server-1.0 \
    gstreamer1.0-plugins-good gstreamer1.0-plugins-bad >"$OUT/apt.log" 2>&1 || tail -5 "$OUT/apt.log"
fi
for name in gpu_ort gpu_trt; do
  step "bench cameras, NVDEC, 5 fps ($name)"
  timeout 300 .venv/bin/streamer -q bench cameras --hwaccel cuda --config "$OUT/$name.yaml" \
    --analysis-fps 5 --cameras 16 --cameras 32 --cameras 48 --cameras 64 --keep-going \
    --duration-s 10 --warmup-s 3 >"$OUT/cameras5_$name.json" 2>"$OUT/cameras5_$name.log"
done
step "bench cameras, NVDEC, every frame (gpu_trt)"
timeout 240 .venv/bin/streamer -q bench cameras --hwaccel cuda --config "$OUT/gpu_trt.yaml" \
  --cameras 16 --cameras 24 --cameras 32 --keep-going --duration-s 10 --warmup-s 3 \
  >"$OUT/cameras_gpu_trt.json" 2>"$OUT/cameras_gpu_trt.log"

step "summary"
$PY - "$OUT" "$START" >&3 <<'PYEOF'
import json, subprocess, sys, time, xml.etree.ElementTree as ET
from pathlib import Path

out, start = Path(sys.argv[1]), int(sys.argv[2])

def load(name):
    p = out / name
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        log = p.with_suffix(".log")
        return {"error": log.read_text()[-600:] if log.exists() else "no output"}

def tests():
    try:
        suite = ET.parse(out / "gpu_tests.xml").getroot().find("testsuite")
    except (OSError, ET.ParseError):
        return {"error": "no test report"}
    skips = [c.find("skipped").get("message", "") for c in suite.iter("testcase")
             if c.find("skipped") is not None]
    return {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")} | {
        "skip_reasons": sorted(set(skips))}

def versions():
    code = (
        "import json, onnxruntime as o\n"
        "v = {'onnxruntime': o.__version__, 'providers': o.get_available_providers()}\n"
        "try:\n    import tensorrt; v['tensorrt'] = tensorrt.__version__\n"
        "except ImportError:\n    v['tensorrt'] = None\n"
        "print(json.dumps(v))"
    )
    p = subprocess.run([".venv/bin/python", "-c", code], capture_output=True, text=True)
    return json.loads(p.stdout) if p.returncode == 0 else {"error": p.stderr[-300:]}

try:
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                      "--format=csv,noheader"], capture_output=True, text=True)
    gpu = smi.stdout.strip() or smi.stderr.strip()
except FileNotFoundError:
    gpu = "no nvidia-smi"
print(json.dumps({
    "check": "gpu",
    "gpu": gpu,
    "versions": versions(),
    "tests": tests(),
    "bench_model": load("bench_model.json"),
    "bench_replay": {n: load(f"replay_{n}.json") for n in ("gpu_ort", "gpu_trt")},
    "bench_crowd_5x5": {n: load(f"crowd_{n}.json") for n in ("gpu_ort", "gpu_trt")},
    "bench_cameras_nvdec_5fps": {n: load(f"cameras5_{n}.json") for n in ("gpu_ort", "gpu_trt")},
    "bench_cameras_nvdec_every_frame": load("cameras_gpu_trt.json"),
    "elapsed_s": int(time.time()) - start,
}, indent=2))
PYEOF

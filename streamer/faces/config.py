"""Config of face detection and tracking."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from streamer.config_base import StrictModel


class DetectorConfig(StrictModel):
    """YuNet face detector (``cv2.FaceDetectorYN``)."""

    backend: Literal["opencv", "onnxruntime"] = Field(
        "opencv",
        description="opencv: cv2.FaceDetectorYN (CPU); onnxruntime: the same ONNX file on "
        "onnxruntime with our own decoding and NMS (can run on CUDA / TensorRT)",
    )
    device: Literal["auto", "cpu", "cuda", "tensorrt"] = Field(
        "auto",
        description="onnxruntime backend only: auto uses TensorRT or CUDA when onnxruntime "
        "has them, else the CPU",
    )
    score_threshold: float = Field(0.7, ge=0.0, le=1.0, description="minimum face score")
    nms_threshold: float = Field(0.3, ge=0.0, le=1.0, description="NMS IoU threshold")
    top_k: int = Field(5000, ge=1, description="candidates kept before NMS")
    detect_width_px: int = Field(
        320,
        ge=64,
        le=4096,
        description="frames are downscaled to this width for detection (boxes are mapped "
        "back to full resolution); 0-cost upscaling is never done",
    )
    detect_every_n_frames: int = Field(
        2,
        ge=1,
        le=30,
        description="run the detector every N frames; the tracker predicts boxes in between",
    )
    max_detect_every_n_frames: int = Field(
        4,
        ge=1,
        le=30,
        description="while every face is tracked well (all matched, none new or lost), "
        "the detector interval grows up to this many frames; any change resets it to "
        "detect_every_n_frames (a value <= detect_every_n_frames turns this off)",
    )
    idle_detect_every_s: float | None = Field(
        1.0,
        gt=0.0,
        le=60.0,
        description="a camera with no track (an empty room) runs the detector only when its "
        "picture changed since the last run (a downscaled grey frame difference), and at "
        "least every this many seconds of media time, so a still face waits at most this "
        "long to be found; null: the detector keeps its schedule on empty rooms too",
    )
    motion_pixel_delta: int = Field(
        25,
        ge=1,
        le=255,
        description="a pixel of the downscaled grey frame changed when it differs by more "
        "than this many grey levels from the frame of the last detector run",
    )
    motion_area_share: float = Field(
        0.002,
        gt=0.0,
        le=1.0,
        description="the picture changed when at least this share of the downscaled "
        "frame's pixels changed",
    )
    min_face_px: int = Field(24, ge=8, description="ignore faces smaller than this (full-res px)")
    concurrent_runs: int = Field(
        0,
        ge=0,
        le=64,
        description="detector runs at once across all cameras (0: half the CPU cores, at "
        "least 1); a camera whose run is due while every slot is busy keeps tracking on "
        "prediction and detects on a later frame, and runs without a slot once its run "
        "would otherwise be more than max_detect_every_n_frames frames late",
    )


class TrackerConfig(StrictModel):
    """SORT-style IoU tracker with a constant-velocity Kalman box model."""

    iou_threshold: float = Field(0.3, ge=0.0, le=1.0, description="minimum IoU to associate")
    min_hits: int = Field(3, ge=1, description="detections before a track is confirmed")
    max_age_s: float = Field(
        0.3, gt=0.0, description="a track unmatched for this long (media time) is deleted"
    )
    max_tracks: int = Field(32, ge=1, description="live tracks per camera (bound on memory)")


class CropConfig(StrictModel):
    """How face crops for the VA model are cut."""

    margin: float = Field(
        0.2, ge=0.0, le=1.0, description="extra border around the box, as a fraction of its size"
    )
    align: bool = Field(True, description="rotate so the eyes are level (uses landmarks)")


class FacesConfig(StrictModel):
    detector: DetectorConfig = DetectorConfig()
    tracker: TrackerConfig = TrackerConfig()
    crop: CropConfig = CropConfig()

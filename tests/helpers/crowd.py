"""The crowd mosaic of the face and bench tests (the ``crowd9`` fixture)."""

CROWD_FRAMES = 36  # frames of the mosaic

"""Pose estimation: MediaPipe BlazePose (33 landmarks), tracking mode, off the event loop.

The model is always BlazePose GHUM Full (``model_complexity=1``), the Apache-2.0 model files
that ship inside the mediapipe 0.10.18 wheel; nothing is downloaded at run time. Two backends
run it behind one :class:`PoseEstimator` (``pose.backend`` in the config, default ``auto``;
see :mod:`climbd.pose.backends` and docs/POSE_BACKENDS.md):

- ``solutions``: the legacy ``mp.solutions.pose.Pose`` graph of mediapipe 0.10.18 (wheels
  for CPython 3.9-3.12 only: Raspberry Pi OS bookworm);
- ``tasks``: the Tasks API ``PoseLandmarker`` of current mediapipe (1.x, CPython 3.13:
  Debian 13 / Raspberry Pi OS trixie) running the same two model files, packed into a
  ``.task`` bundle with the TFLite metadata the Tasks API needs by
  :mod:`climbd.pose.bundle` and installed as the ``climbd-blazepose-full`` package.

Reference: Bazarevsky et al., "BlazePose: On-device Real-time Body Pose tracking",
arXiv:2006.10204 (2020); landmark order and names from MediaPipe's ``PoseLandmark`` enum.

Two landmark sets are kept for every detected frame:

- **image landmarks** ``(33, 5)`` float32: ``x, y`` normalised to the frame width/height
  (0..1, may fall slightly outside), ``z`` depth relative to the hip midpoint on roughly the
  scale of ``x``, ``visibility`` and ``presence`` (0..1; ``presence`` is NaN with the
  ``solutions`` backend, whose graph does not fill it). Use these to draw on the video.
- **world landmarks** ``(33, 3)`` float32: metres, origin at the midpoint of the hips. Use
  these for angles and distances, never for drawing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from climbd.config import PoseConfig
from climbd.errors import PoseError

__all__ = ["LANDMARK_NAMES", "NUM_LANDMARKS", "POSE_CONNECTIONS", "Pose", "PoseEstimator"]

NUM_LANDMARKS = 33

#: BlazePose landmark names, in model output order (MediaPipe ``PoseLandmark``).
LANDMARK_NAMES: tuple[str, ...] = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye",
    "right_eye_outer", "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_pinky",
    "right_pinky", "left_index", "right_index", "left_thumb", "right_thumb", "left_hip",
    "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "left_heel",
    "right_heel", "left_foot_index", "right_foot_index",
)

#: Skeleton edges as landmark index pairs (MediaPipe ``POSE_CONNECTIONS``).
POSE_CONNECTIONS: tuple[tuple[int, int], ...] = (
    (0, 1), (1, 2), (2, 3), (3, 7), (0, 4), (4, 5), (5, 6), (6, 8), (9, 10), (11, 12),
    (11, 13), (13, 15), (15, 17), (15, 19), (15, 21), (17, 19), (12, 14), (14, 16), (16, 18),
    (16, 20), (16, 22), (18, 20), (11, 23), (12, 24), (23, 24), (23, 25), (24, 26), (25, 27),
    (26, 28), (27, 29), (28, 30), (29, 31), (30, 32), (27, 31), (28, 32),
)


@dataclass(frozen=True, slots=True)
class Pose:
    """The pose result of one frame.

    Attributes:
        frame_number: capture frame number the result belongs to.
        timestamp: monotonic capture time of that frame, seconds.
        width, height: frame size in pixels (to draw normalised landmarks with the right
            aspect ratio).
        image: ``(33, 5)`` float32 image landmarks ``x, y, z, visibility, presence`` or None
            when no person was found.
        world: ``(33, 3)`` float32 world landmarks in metres (hip-centred) or None.
        inference_s: wall time the model took on this frame, seconds.
    """

    frame_number: int
    timestamp: float
    width: int
    height: int
    image: np.ndarray | None
    world: np.ndarray | None
    inference_s: float = 0.0

    @property
    def detected(self) -> bool:
        """True when a person was found in the frame."""
        return self.image is not None


class PoseEstimator:
    """Runs BlazePose Full on RGB frames, one at a time, in tracking mode.

    Not thread-safe: create and use it on a single worker thread. Frames must be fed in
    capture order (tracking uses the previous frame's landmarks as the next region of
    interest).

    Args:
        config: pose settings; ``config.backend`` picks the MediaPipe API ("auto": the
            ``solutions`` graph when mediapipe 0.10.18 is installed, else ``tasks``).
        backend: overrides ``config.backend`` (benchmarks and tests run both side by side).

    Attributes:
        backend: the name of the backend in use, "solutions" or "tasks".

    Raises:
        PoseError: mediapipe cannot be imported, the chosen backend is not installed or the
            model cannot be loaded (the message says what to install).
    """

    def __init__(self, config: PoseConfig | None = None, backend: str | None = None):
        from climbd.pose import backends

        config = config or PoseConfig()
        self._impl = backends.create(config, backend or config.backend)
        self.backend: str = self._impl.name

    def process(self, rgb: np.ndarray, frame_number: int = 0, timestamp: float = 0.0) -> Pose:
        """Estimate the pose in one frame.

        Args:
            rgb: ``(height, width, 3)`` uint8 RGB image.
            frame_number: carried into the result.
            timestamp: capture time in seconds, carried into the result.

        Raises:
            PoseError: the image has the wrong shape or the graph failed.
        """
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise PoseError(f"expected an (H, W, 3) uint8 RGB image, got {rgb.shape} {rgb.dtype}")
        t0 = time.perf_counter()
        try:
            image, world = self._impl.process(rgb)
        except PoseError:
            raise
        except Exception as exc:
            raise PoseError(f"pose inference failed: {exc}") from exc
        return Pose(frame_number, timestamp, rgb.shape[1], rgb.shape[0], image, world,
                    time.perf_counter() - t0)

    def close(self) -> None:
        """Release the MediaPipe graph."""
        self._impl.close()

    def __enter__(self) -> PoseEstimator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

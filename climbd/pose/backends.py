"""The two MediaPipe APIs that run BlazePose GHUM Full behind :class:`climbd.pose.PoseEstimator`.

Both take one ``(H, W, 3)`` uint8 RGB frame at a time, in capture order, and return
``(image, world)``: ``(33, 5)`` float32 image landmarks ``x, y, z, visibility, presence``
(x, y normalised to the frame) and ``(33, 3)`` float32 world landmarks in metres
(hip-centred), or ``(None, None)`` when no person was found.

- :class:`SolutionsBackend`: ``mp.solutions.pose.Pose`` of mediapipe 0.10.18, the model
  files inside that wheel. CPython 3.9-3.12 only.
- :class:`TasksBackend`: the Tasks API ``PoseLandmarker`` (``VIDEO`` running mode: detector
  on the first frame, then the region of interest tracked from the previous frame's
  landmarks, with landmark smoothing) of any mediapipe that has it (0.10.x and 1.x; 1.x is
  the one with CPython 3.13 wheels), running the same two model files from the
  ``climbd-blazepose-full`` bundle (:mod:`climbd.pose.bundle`).

``auto`` picks ``solutions`` where it is installed (the results climbd has always had) and
``tasks`` elsewhere. Measured differences between the two on the same frames are in
docs/POSE_BACKENDS.md (bench/bench_pose.py).
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any, Protocol

import numpy as np

from climbd.config import PoseConfig
from climbd.errors import PoseError

__all__ = ["BACKENDS", "SolutionsBackend", "TasksBackend", "available", "create"]

BACKENDS = ("solutions", "tasks")

#: Frame interval of the simulated time line fed to the trackers, microseconds. The
#: ``solutions`` graph always advances its timestamps by 33333 µs a frame
#: (``mediapipe/python/solution_base.py``), whatever the real frame rate; the ``tasks``
#: backend uses the same time line so both smooth landmarks alike.
SIMULATED_FRAME_US = 33_333


class Backend(Protocol):
    """What :class:`climbd.pose.PoseEstimator` needs from a backend."""

    name: str

    def process(self, rgb: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]: ...

    def close(self) -> None: ...


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent package is missing
        return False


def available() -> dict[str, str]:
    """Which backends can run here: ``{name: "" if available else why not}``.

    Cheap (no model is loaded; mediapipe is not imported).
    """
    from climbd.pose import bundle

    out: dict[str, str] = {}
    out["solutions"] = ("" if _has_module("mediapipe.python.solutions.pose") else
                        "mediapipe.solutions is not installed (it needs mediapipe 0.10.18, "
                        "CPython <= 3.12)")
    if not _has_module("mediapipe.tasks.python.vision"):
        out["tasks"] = "mediapipe with the Tasks API is not installed"
    else:
        try:
            bundle.find_task_file()
            out["tasks"] = ""
        except PoseError as exc:
            out["tasks"] = str(exc)
    return out


def create(config: PoseConfig, backend: str = "auto") -> Backend:
    """The backend ``backend`` ("auto", "solutions" or "tasks") configured from ``config``.

    Raises:
        PoseError: unknown name, not installed (the message says what is missing), or the
            model failed to load.
    """
    if backend == "auto":
        why = available()
        backend = next((b for b in BACKENDS if not why[b]), "")
        if not backend:
            raise PoseError("no pose backend is installed: "
                            + "; ".join(f"{b}: {why[b]}" for b in BACKENDS))
    if backend == "solutions":
        return SolutionsBackend(config)
    if backend == "tasks":
        return TasksBackend(config)
    raise PoseError(f"unknown pose backend {backend!r} (one of auto, {', '.join(BACKENDS)})")


class SolutionsBackend:
    """``mp.solutions.pose.Pose(static_image_mode=False, model_complexity=1)``.

    Raises:
        PoseError: mediapipe.solutions is missing or the graph cannot be built.
    """

    name = "solutions"

    def __init__(self, config: PoseConfig) -> None:
        os.environ.setdefault("GLOG_minloglevel", "2")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        try:
            from mediapipe.python.solutions import pose as mp_pose

            self._pose = mp_pose.Pose(
                static_image_mode=False,
                model_complexity=config.model_complexity,
                smooth_landmarks=config.smooth_landmarks,
                min_detection_confidence=config.min_detection_confidence,
                min_tracking_confidence=config.min_tracking_confidence,
            )
        except Exception as exc:  # ImportError, RuntimeError from the graph, ...
            raise PoseError(f"cannot load the BlazePose model (solutions): {exc}") from exc

    def process(self, rgb: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Landmarks of one frame (see the module docstring for the shapes)."""
        result = self._pose.process(rgb)
        if result.pose_landmarks is None:
            return None, None
        image = np.empty((33, 5), np.float32)
        for i, lm in enumerate(result.pose_landmarks.landmark):
            presence = lm.presence if lm.HasField("presence") else np.nan
            image[i] = (lm.x, lm.y, lm.z, lm.visibility, presence)
        world = np.full((33, 3), np.nan, np.float32)
        if result.pose_world_landmarks is not None:
            for i, lm in enumerate(result.pose_world_landmarks.landmark):
                world[i] = (lm.x, lm.y, lm.z)
        return image, world

    def close(self) -> None:
        """Release the graph."""
        self._pose.close()


def lse_missing(machine: str, cpuinfo: str) -> bool:
    """True if ``cpuinfo`` (the text of /proc/cpuinfo) describes an arm64 CPU without the
    ARMv8.1 Large System Extensions (the ``atomics`` feature flag), e.g. the Cortex-A72 of a
    Raspberry Pi 4. ``machine`` is ``platform.machine()``; other architectures give False.

    mediapipe 1.x's aarch64 wheels are built with LSE and abort the whole process at load on
    such a CPU ("compiled with lse enabled, but this feature is not available").
    """
    if machine not in ("aarch64", "arm64"):
        return False
    features = [line.split(":", 1)[1].split() for line in cpuinfo.splitlines()
                if line.startswith("Features") and ":" in line]
    return bool(features) and not all("atomics" in f for f in features)


def arm64_without_lse() -> str | None:
    """Why the Tasks backend (mediapipe 1.x) cannot run on this CPU, or None if it can.

    Checked before mediapipe is imported: its abort would take the daemon with it, where a
    :class:`PoseError` leaves it serving video without pose, health saying why.
    """
    import platform

    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            cpuinfo = f.read()
    except OSError:
        return None
    if not lse_missing(platform.machine(), cpuinfo):
        return None
    return ("this CPU has no ARMv8.1 atomics (LSE; e.g. the Cortex-A72 of a Raspberry Pi 4): "
            "mediapipe 1.x (the tasks pose backend, Python 3.13) cannot run on it. Use an OS "
            "with Python 3.11 (Raspberry Pi OS / Debian bookworm), where climbd runs "
            "mediapipe 0.10.18 (see docs/DEVICES.md)")


class TasksBackend:
    """Tasks API ``PoseLandmarker`` in ``VIDEO`` mode with the BlazePose Full bundle.

    Settings map onto the Tasks options: ``min_detection_confidence`` ->
    ``min_pose_detection_confidence``; ``min_tracking_confidence`` -> both
    ``min_pose_presence_confidence`` and ``min_tracking_confidence`` (the legacy graph has one
    threshold for both). ``smooth_landmarks`` has no Tasks option: the Tasks graph always
    smooths in ``VIDEO`` mode. Frames get timestamps on the simulated 30 fps time line of the
    legacy graph (:data:`SIMULATED_FRAME_US`).

    Raises:
        PoseError: mediapipe has no Tasks API, the bundle is not installed
            (:func:`climbd.pose.bundle.find_task_file` says how to get it) or does not load.
    """

    name = "tasks"

    def __init__(self, config: PoseConfig, task_file: str | os.PathLike[str] | None = None):
        from climbd.pose import bundle

        problem = arm64_without_lse()
        if problem:
            raise PoseError(problem)
        os.environ.setdefault("GLOG_minloglevel", "2")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        path = os.fspath(task_file) if task_file is not None else str(bundle.find_task_file())
        try:
            import mediapipe as mp
            from mediapipe.tasks.python import BaseOptions, vision

            options = vision.PoseLandmarkerOptions(
                base_options=BaseOptions(model_asset_path=path),
                running_mode=vision.RunningMode.VIDEO,
                num_poses=1,
                min_pose_detection_confidence=config.min_detection_confidence,
                min_pose_presence_confidence=config.min_tracking_confidence,
                min_tracking_confidence=config.min_tracking_confidence,
                output_segmentation_masks=False,
            )
            self._landmarker: Any = vision.PoseLandmarker.create_from_options(options)
        except Exception as exc:
            raise PoseError(f"cannot load the BlazePose model (tasks, {path}): {exc}") from exc
        self._mp = mp
        self._frames = 0
        self._closed = False

    def process(self, rgb: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Landmarks of one frame (see the module docstring for the shapes)."""
        mp = self._mp
        frame = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))
        timestamp_ms = self._frames * SIMULATED_FRAME_US // 1000
        self._frames += 1
        result = self._landmarker.detect_for_video(frame, timestamp_ms)
        if not result.pose_landmarks:
            return None, None
        image = np.array(
            [(lm.x, lm.y, lm.z,
              np.nan if lm.visibility is None else lm.visibility,
              np.nan if lm.presence is None else lm.presence)
             for lm in result.pose_landmarks[0]], np.float32)
        world = np.full((33, 3), np.nan, np.float32)
        if result.pose_world_landmarks:
            world[:] = [(lm.x, lm.y, lm.z) for lm in result.pose_world_landmarks[0]]
        return image, world

    def close(self) -> None:
        """Release the graph (idempotent)."""
        if not self._closed:
            self._closed = True
            self._landmarker.close()

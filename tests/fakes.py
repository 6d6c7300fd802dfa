"""Fakes at hardware seams only: a camera that behaves like a V4L2 device.

:class:`FakeCamera` delivers frames of a real clip at the camera's frame rate with the
read-time monotonic timestamp a real camera driver gives, and can be unplugged (``read``
raises like a vanished ``/dev/video0``: ENODEV, and reopening fails until replugged) or
stalled (``read`` blocks, as a wedged USB camera does).
"""

from __future__ import annotations

import errno
import threading
import time
from pathlib import Path

import av

from climbd.capture import Frame
from climbd.errors import SourceError


class CameraRig:
    """The physical state shared by every open of one fake device."""

    def __init__(self, clip: Path, fps: float | None = None):
        self.clip = clip
        self.fps = fps
        self.plugged = threading.Event()
        self.plugged.set()
        self.running = threading.Event()  # cleared = stalled
        self.running.set()
        self.opens = 0

    def unplug(self) -> None:
        self.plugged.clear()

    def replug(self) -> None:
        self.plugged.set()

    def stall(self) -> None:
        self.running.clear()

    def resume(self) -> None:
        self.running.set()

    def open(self, first_number: int) -> FakeCamera:
        """The source factory for :class:`climbd.capture.CaptureWorker`."""
        self.opens += 1
        if not self.plugged.is_set():
            raise SourceError(f"cannot open /dev/video9: {errno.errorcode[errno.ENOENT]} "
                              "No such file or directory")
        return FakeCamera(self, first_number)


class FakeCamera:
    """A :class:`climbd.capture.FrameSource` over a clip, paced like a camera, looping."""

    description = "/dev/video9 (fake)"

    def __init__(self, rig: CameraRig, first_number: int):
        self._rig = rig
        container = av.open(str(rig.clip))
        stream = container.streams.video[0]
        self._frames = [f for f in container.decode(stream)]
        container.close()
        self.fps = rig.fps or float(stream.average_rate or 30)
        self._i = 0
        self._number = first_number
        self._next = time.monotonic()

    def read(self) -> Frame | None:
        while not self._rig.running.wait(0.05):
            if not self._rig.plugged.is_set():
                break
        if not self._rig.plugged.is_set():
            raise SourceError("VIDIOC_DQBUF: No such device (ENODEV)")
        delay = self._next - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self._next = max(self._next + 1 / self.fps, time.monotonic() - 1 / self.fps)
        image = self._frames[self._i % len(self._frames)]
        self._i += 1
        frame = Frame(self._number, time.monotonic(), image)
        self._number += 1
        return frame

    def close(self) -> None:
        self._frames = []

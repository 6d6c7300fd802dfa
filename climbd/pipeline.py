"""The live pipeline: capture → (encode ‖ pose) → broadcasts on the event loop.

Threads (blocking work never runs on the event loop):

- ``climbd-capture`` (:class:`~climbd.capture.CaptureWorker`) reads frames and hands each
  one to the encoder queue *and* to the pose slot;
- ``climbd-encode`` encodes every frame (video never skips a frame) and publishes
  :class:`~climbd.video.EncodedPacket` on :attr:`Pipeline.packets`;
- ``climbd-pose-N`` (``pose.workers`` of them, each with its own BlazePose tracker) take
  the *latest* frame from a one-slot hand-off whenever they are free (when inference falls
  behind the camera, pose skips frames: latest frame wins) and publish
  :class:`~climbd.pose.Pose` on :attr:`Pipeline.poses` in frame order; each pose names its
  frame number.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from climbd.broadcast import Broadcast
from climbd.capture import CaptureState, CaptureWorker, Frame, FrameSource, open_source
from climbd.config import Config
from climbd.errors import PoseError
from climbd.pose import Pose, PoseEstimator
from climbd.video import EncodedPacket, VideoEncoder

__all__ = ["LatestSlot", "Pipeline"]

log = logging.getLogger(__name__)

_STOP = object()


class LatestSlot:
    """A one-item, latest-wins hand-off between two threads.

    :meth:`put` replaces any item not yet taken (counted in :attr:`overwritten`);
    :meth:`take` blocks until an item is there or the slot is closed (then returns None).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: Any = None
        self._closed = False
        self.overwritten = 0

    def put(self, item: Any) -> None:
        """Store ``item``, replacing an untaken one."""
        with self._cond:
            if self._item is not None:
                self.overwritten += 1
            self._item = item
            self._cond.notify()

    def take(self, timeout: float | None = None) -> Any:
        """Wait for and remove the item; None on close or timeout."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._item is not None or self._closed, timeout):
                return None
            item, self._item = self._item, None
            return item

    def close(self) -> None:
        """Wake the taker for good."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class Pipeline:
    """Capture, encode and pose stages wired together, publishing onto ``loop``.

    Args:
        config: the daemon configuration.
        loop: the event loop the broadcasts deliver on.
        source_factory: opens the capture source given the next frame number (the seam
            for fake cameras in tests); default opens ``config.capture.source``.
        pose_factory: builds the pose estimator on the pose thread (default BlazePose Full).
    """

    ENCODE_QUEUE = 30  # frames (≈1 s at 30 fps) the encoder may fall behind before dropping

    def __init__(
        self,
        config: Config,
        loop: asyncio.AbstractEventLoop,
        source_factory: Callable[[int], FrameSource] | None = None,
        pose_factory: Callable[[], PoseEstimator] | None = None,
    ):
        self.config = config
        self.packets: Broadcast[EncodedPacket] = Broadcast(loop)
        self.poses: Broadcast[Pose] = Broadcast(loop)
        factory = source_factory or (
            lambda n: open_source(config.capture.source, config.capture, n)
        )
        self.capture = CaptureWorker(factory, self._on_frame, config.capture)
        self.encoder = VideoEncoder(config.video, config.capture.fps)
        self._pose_factory = pose_factory or (lambda: PoseEstimator(config.pose))
        self._encode_q: queue.Queue[Any] = queue.Queue(self.ENCODE_QUEUE)
        self._pose_slot = LatestSlot()
        self._threads = [
            threading.Thread(target=self._encode_loop, name="climbd-encode", daemon=True),
        ]
        if config.pose.enabled:
            self._threads += [
                threading.Thread(target=self._pose_loop, name=f"climbd-pose-{i}", daemon=True)
                for i in range(config.pose.workers)]
        # Pose workers take frames in ticket order and publish in the same order, so pose
        # results always come out in increasing frame number whichever worker finishes first.
        self._take_lock = threading.Lock()
        self._publish_cond = threading.Condition()
        self._next_ticket = 0
        self._next_publish = 0
        self.video_dropped = 0
        self.video_error: str | None = None
        self.pose_error: str | None = None
        self.last_packet_at: float | None = None
        self.last_pose_at: float | None = None   # monotonic time the last result came out
        self.pose_results = 0
        self.pose_detected = 0
        self._inference_ms: deque[float] = deque(maxlen=300)
        self._pose_times: deque[float] = deque(maxlen=60)
        self.started_at = time.monotonic()

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker threads."""
        for t in self._threads:
            t.start()
        self.capture.start()

    def stop(self) -> None:
        """Stop capture, drain the encoder, stop pose; joins the threads."""
        self.capture.stop()
        try:
            self._encode_q.put(_STOP, timeout=2.0)
        except queue.Full:  # encoder wedged: its thread is a daemon thread, leave it
            log.error("encoder did not drain its queue on stop")
        self._pose_slot.close()
        for t in self._threads:
            if t.ident is not None:  # never started in safe mode
                t.join(5.0)
        self.packets.close()
        self.poses.close()

    def request_keyframe(self) -> None:
        """Ask the encoder to make the next frame an IDR (thread-safe)."""
        self.encoder.request_keyframe()

    # -- stages ----------------------------------------------------------------------------
    def _on_frame(self, frame: Frame) -> None:
        try:
            self._encode_q.put_nowait(frame)
        except queue.Full:
            self.video_dropped += 1
            log.warning("encoder is behind the camera: frame %d dropped", frame.number)
        self._pose_slot.put(frame)

    def _encode_loop(self) -> None:
        while True:
            frame = self._encode_q.get()
            if frame is _STOP:
                break
            if self.encoder.info is None:
                self.encoder.fps = self.capture.source_fps
            try:
                packets = self.encoder.encode(frame.image, frame.timestamp, frame.number)
            except Exception as exc:  # av.FFmpegError and friends: report, keep serving
                self.video_error = f"encoder failed: {exc}"
                log.error("%s", self.video_error)
                continue
            for p in packets:
                self.last_packet_at = time.monotonic()
                self.packets.publish_threadsafe(p)

    def _pose_loop(self) -> None:
        try:
            estimator = self._pose_factory()
        except PoseError as exc:
            self.pose_error = str(exc)
            log.error("pose disabled: %s", exc)
            return
        try:
            while True:
                with self._take_lock:
                    frame = self._pose_slot.take()
                    if frame is None:
                        break
                    ticket = self._next_ticket
                    self._next_ticket += 1
                pose = None
                try:
                    rgb = frame.image.to_ndarray(format="rgb24")
                    pose = estimator.process(rgb, frame.number, frame.timestamp)
                except PoseError as exc:
                    self.pose_error = str(exc)
                    log.error("%s", exc)
                finally:
                    self._publish_in_order(ticket, pose)
        finally:
            self._pose_slot.close()  # a worker that stops must not leave the others waiting
            estimator.close()

    def _publish_in_order(self, ticket: int, pose: Pose | None) -> None:
        with self._publish_cond:
            self._publish_cond.wait_for(lambda: self._next_publish == ticket)
            if pose is not None:
                now = time.monotonic()
                self.last_pose_at = now
                self.pose_results += 1
                self.pose_detected += pose.detected
                self._inference_ms.append(pose.inference_s * 1000)
                self._pose_times.append(now)
                self.poses.publish_threadsafe(pose)
            self._next_publish += 1
            self._publish_cond.notify_all()

    # -- health ----------------------------------------------------------------------------
    @property
    def pose_fps(self) -> float:
        """Pose results per second over the last ~60 results."""
        t = self._pose_times
        if len(t) < 2 or t[-1] == t[0]:
            return 0.0
        return (len(t) - 1) / (t[-1] - t[0])

    def alive(self, max_age_s: float | None = None) -> bool:
        """True while fresh frames are being encoded and (if enabled) pose results arrive.

        While the source is missing and being retried, or a file source has ended, the
        pipeline counts as alive if the capture thread runs: the systemd watchdog restarts a
        *wedged* pipeline (an open camera that stopped delivering, a stuck inference), not
        one that is waiting for a camera to be plugged in.

        ``max_age_s`` defaults to the capture stall timeout.
        """
        max_age = max_age_s if max_age_s is not None else self.config.capture.stall_timeout_s
        now = time.monotonic()
        if self.capture.state in (CaptureState.CONNECTING, CaptureState.LOST, CaptureState.ENDED):
            # A missing camera is being retried (a restart would not bring it back) and an
            # ended file is done: alive as long as the capture thread itself runs.
            return self.capture.is_alive() or self.capture.state is CaptureState.ENDED
        if self.last_packet_at is None or now - self.last_packet_at > max_age:
            return False
        if self.config.pose.enabled and self.pose_error is None:
            return self.last_pose_at is not None and now - self.last_pose_at <= max_age
        return True

    def health(self) -> dict[str, Any]:
        """Capture, video and pose health as a JSON-ready dict."""
        now = time.monotonic()
        cap = self.capture
        inf = list(self._inference_ms)
        state = cap.state.value
        age = None if cap.last_frame_at is None else max(0.0, now - cap.last_frame_at)
        if state == "running" and age is not None and age > self.config.capture.stall_timeout_s:
            state = "stalled"  # open, but no frame for stall_timeout_s (wedged camera)
        return {
            "capture": {
                "state": state,
                "source": self.config.capture.source,
                "fps": round(cap.fps, 2),
                "frames": cap.frames,
                "error": cap.error,
                "reconnects": cap.reconnects,
                "last_frame_age_s": None if age is None else round(age, 3),
            },
            "video": {
                "encoder": self.config.video.encoder,
                "frames": self.encoder.frames,
                "dropped": self.video_dropped,
                "error": self.video_error,
                "encode_ms_mean": round(1000 * self.encoder.encode_seconds
                                        / max(1, self.encoder.frames), 2),
            },
            "pose": {
                "enabled": self.config.pose.enabled,
                "fps": round(self.pose_fps, 2),
                "results": self.pose_results,
                "detected": self.pose_detected,
                "skipped": self._pose_slot.overwritten,
                "error": self.pose_error,
                "inference_ms_p50": round(statistics.median(inf), 2) if inf else None,
                "last_result_age_s": None if self.last_pose_at is None
                else round(now - self.last_pose_at, 3),
            },
        }

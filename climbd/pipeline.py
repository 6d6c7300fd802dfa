"""The live pipeline: capture → (encode ‖ pose) → broadcasts on the event loop.

Threads (blocking work never runs on the event loop):

- ``climbd-capture`` (:class:`~climbd.capture.CaptureWorker`) reads frames and hands each
  one to the encoder queue *and* to the pose slot;
- ``climbd-encode`` encodes every frame (video never skips a frame) and publishes
  :class:`~climbd.video.EncodedPacket` on :attr:`Pipeline.packets`;
- in *passthrough* (``video.encoder = "copy"``, or ``"auto"`` with a camera/stream that
  sends H.264) the capture thread publishes the camera's own access units instead, with
  the same 90 kHz pts rule, and frames are decoded only for pose. When the camera's stream
  will not do for browsers (profile, level, B-frames, or a GOP over
  :data:`~climbd.video.MAX_PASSTHROUGH_GOP_S`: see :func:`~climbd.video.passthrough_problem`)
  the pipeline encodes the decoded frames instead and says why (log and health);
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
from climbd.capture import (
    CaptureState,
    CaptureWorker,
    Frame,
    FrameSource,
    SourceKind,
    classify_source,
    open_source,
)
from climbd.config import Config
from climbd.device import resolve_encoder, resolve_workers
from climbd.errors import PoseError
from climbd.pose import Pose, PoseEstimator
from climbd.redaction import redact_url
from climbd.video import (
    CLOCK_RATE,
    MAX_PASSTHROUGH_GOP_S,
    EncodedPacket,
    VideoEncoder,
    VideoStreamInfo,
    passthrough_problem,
)

#: ``video.encoder`` values that ask for the camera's own H.264 (passthrough).
COPY_ENCODERS = ("copy", "auto")
#: Encoder used when passthrough was asked for but the camera's stream will not do.
FALLBACK_ENCODER = "libx264"

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
        encoder = config.video.encoder
        #: stream copy wanted: "copy" always, "auto" for cameras and network streams
        self.want_copy = encoder == "copy" or (
            encoder == "auto"
            and classify_source(config.capture.source) is not SourceKind.FILE)
        factory = source_factory or (
            lambda n: open_source(config.capture.source, config.capture, n,
                                  copy=self.want_copy)
        )
        self.capture = CaptureWorker(factory, self._on_frame, config.capture)
        video = config.video
        if encoder in COPY_ENCODERS:  # what runs when this pipeline encodes after all
            video = video.model_copy(update={"encoder": resolve_encoder(
                encoder, config.capture.width, config.capture.height, config.capture.fps)})
        self.encoder = VideoEncoder(video, config.capture.fps)
        #: the encoder opened when this pipeline encodes ("auto" resolved)
        self.encoder_name = video.encoder
        #: "copy" while the camera's packets are published as they are, else "encode"
        self.video_mode = "copy" if self.want_copy else "encode"
        #: why passthrough is not used (None while it is, or when it was not asked for)
        self.passthrough_problem: str | None = None
        self._verdicts: dict[VideoStreamInfo, str | None] = {}
        self._copy_info: VideoStreamInfo | None = None
        self._copy_epoch: float | None = None
        self._copy_last_pts = -1
        self._last_key_ts: float | None = None
        self._last_copy_ts: float | None = None
        self._frames_since_key: int | None = None   # copy: frames since the last IDR
        self.gop_s: float | None = None   # longest keyframe interval seen (copy), s
        self.copied = 0
        self._pose_factory = pose_factory or (lambda: PoseEstimator(config.pose))
        self._encode_q: queue.Queue[Any] = queue.Queue(self.ENCODE_QUEUE)
        self._pose_slot = LatestSlot()
        self._threads = [
            threading.Thread(target=self._encode_loop, name="climbd-encode", daemon=True),
        ]
        if config.pose.enabled:
            self._threads += [
                threading.Thread(target=self._pose_loop, name=f"climbd-pose-{i}", daemon=True)
                for i in range(resolve_workers(config.pose.workers))]
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
        #: the latest 300 pose inference times, milliseconds (health; benchmarks read and
        #: clear it to measure a window)
        self.inference_ms: deque[float] = deque(maxlen=300)
        self._pose_times: deque[float] = deque(maxlen=60)
        self.started_at = time.monotonic()

    @property
    def pose_skipped(self) -> int:
        """Frames the pose stage never saw since start: a newer frame replaced them in the
        latest-frame-wins slot while inference was busy."""
        return self._pose_slot.overwritten

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
        """Ask the encoder to make the next frame an IDR (thread-safe).

        In passthrough nothing can force the camera's next keyframe (RTSP has no such
        request); viewers and recordings start at the camera's next one, at most one GOP
        away.
        """
        self.encoder.request_keyframe()

    @property
    def stream_info(self) -> VideoStreamInfo | None:
        """Parameters of the H.264 stream now published (None before the first packet)."""
        if self.video_mode == "copy":
            return self._copy_info
        return self.encoder.info

    # -- stages ----------------------------------------------------------------------------
    def _on_frame(self, frame: Frame) -> None:
        packet = frame.packet
        if self.want_copy:
            if packet is not None and self._copy_verdict(packet.info, frame) is None:
                self._publish_copy(frame)
                if frame.image is not None:
                    self._pose_slot.put(frame)
                return
            if packet is None and self.passthrough_problem is None:
                self._no_copy("the camera does not send H.264 (it is decoded and encoded)")
            if frame.image is None:
                return
        try:
            self._encode_q.put_nowait(frame)
        except queue.Full:
            self.video_dropped += 1
            log.warning("encoder is behind the camera: frame %d dropped", frame.number)
        self._pose_slot.put(frame)

    def _copy_verdict(self, info: VideoStreamInfo, frame: Frame) -> str | None:
        """None if ``info``'s packets may be published as they are, else why not."""
        if info not in self._verdicts:
            problem = passthrough_problem(info)
            self._verdicts[info] = problem
            if problem is None:
                log.info("video: passthrough of the camera's H.264 (profile-level-id %s, "
                         "%dx%d)", info.profile_level_id, info.width, info.height)
                self._last_key_ts = None
                self._frames_since_key = None
                self.video_mode = "copy"
                self.passthrough_problem = None
            else:
                self._no_copy(problem)
        problem = self._verdicts[info]
        if problem is None and frame.packet is not None:
            ts = frame.timestamp
            if self._last_copy_ts is not None and ts - self._last_copy_ts > 1.0:
                self._last_key_ts = None  # the camera was away: not a long GOP
                self._frames_since_key = None
            self._last_copy_ts = ts
            if self._frames_since_key is not None:
                self._frames_since_key += 1
            if frame.packet.keyframe:
                if self._last_key_ts is not None:
                    gop = self._gop_span(ts - self._last_key_ts, info)
                    self.gop_s = gop if self.gop_s is None else max(self.gop_s, gop)
                self._last_key_ts = ts
                self._frames_since_key = 0
            if self._last_key_ts is not None:
                span = self._gop_span(ts - self._last_key_ts, info)
                if span > MAX_PASSTHROUGH_GOP_S:
                    problem = passthrough_problem(info, span)
                    self._verdicts[info] = problem
                    self._no_copy(problem or "GOP too long")
        return problem

    def _gop_span(self, wall_s: float, info: VideoStreamInfo) -> float:
        """Time since the last keyframe, seconds, in stream time where the rate is known.

        Frames counted since the keyframe over the stream's nominal rate (``info.fps``):
        a camera's connect backlog or a loaded box delivers frames in bursts, so the wall
        clock (``wall_s``, the fallback) would report a 1 s GOP as 0.2 s or 3 s.
        """
        if 0 < info.fps <= 240 and self._frames_since_key is not None:   # (a sane rate)
            return self._frames_since_key / info.fps
        return wall_s

    def _no_copy(self, problem: str) -> None:
        if self.passthrough_problem != problem:
            log.warning("video: passthrough not possible: %s; encoding with %s instead",
                        problem, self.encoder_name)
        self.passthrough_problem = problem
        self.video_mode = "encode"
        self.encoder.request_keyframe()

    def _publish_copy(self, frame: Frame) -> None:
        packet = frame.packet
        assert packet is not None
        if self._copy_epoch is None:
            self._copy_epoch = frame.timestamp
        pts = max(round((frame.timestamp - self._copy_epoch) * CLOCK_RATE),
                  self._copy_last_pts + 1)
        self._copy_last_pts = pts
        self._copy_info = packet.info
        self.copied += 1
        self.last_packet_at = time.monotonic()
        self.packets.publish_threadsafe(EncodedPacket(
            packet.data, pts, frame.timestamp, frame.number, packet.keyframe, packet.info))

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
                    assert frame.image is not None  # frames without a picture are not queued
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
                self.inference_ms.append(pose.inference_s * 1000)
                self._pose_times.append(now)
                self.poses.publish_threadsafe(pose)
            self._next_publish += 1
            self._publish_cond.notify_all()

    # -- health ----------------------------------------------------------------------------
    def _passthrough_health(self) -> dict[str, Any] | None:
        if not self.want_copy:
            return None
        info = self._copy_info
        return {
            "active": self.video_mode == "copy",
            "problem": self.passthrough_problem,
            "profile_level_id": info.profile_level_id if info else None,
            "gop_s": None if self.gop_s is None else round(self.gop_s, 3),
            "packets": self.copied,
        }

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
        inf = list(self.inference_ms)
        state = cap.state.value
        age = None if cap.last_frame_at is None else max(0.0, now - cap.last_frame_at)
        if state == "running" and age is not None and age > self.config.capture.stall_timeout_s:
            state = "stalled"  # open, but no frame for stall_timeout_s (wedged camera)
        return {
            "capture": {
                "state": state,
                "source": redact_url(self.config.capture.source),
                "fps": round(cap.fps, 2),
                "nominal_fps": round(cap.source_fps, 3),
                "frames": cap.frames,
                "error": cap.error,
                "reconnects": cap.reconnects,
                "retry_in_s": None if cap.retry_at is None or state != "lost"
                else round(max(0.0, cap.retry_at - now), 1),
                "lost_for_s": None if cap.lost_since is None
                else round(now - cap.lost_since, 1),
                "last_frame_age_s": None if age is None else round(age, 3),
            },
            "video": {
                "encoder": self.config.video.encoder,
                "encoder_opened": self.encoder_name,  # "auto" resolved (device profiles)
                "mode": self.video_mode,
                "passthrough": self._passthrough_health(),
                "frames": self.encoder.frames + self.copied,
                "encoded": self.encoder.frames,
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
                "skipped": self.pose_skipped,
                "error": self.pose_error,
                "inference_ms_p50": round(statistics.median(inf), 2) if inf else None,
                "last_result_age_s": None if self.last_pose_at is None
                else round(now - self.last_pose_at, 3),
            },
        }

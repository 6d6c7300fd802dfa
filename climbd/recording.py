"""Recording: sessions from the live packet and pose streams, with pre-roll.

The :class:`Recorder` consumes the pipeline's broadcasts on the event loop:

- every :class:`~climbd.video.EncodedPacket` and every :class:`~climbd.pose.Pose` first goes
  into the :class:`PreRollBuffer`, which keeps the last ``buffer_s`` seconds (plus the
  GOP that reaches back to a keyframe) in memory; the delayed live view
  (:mod:`climbd.streaming.delay`) replays its packets too;
- while a session records, packets go to a writer thread that appends them to a fragmented
  MP4 (one fragment per GOP, so a kill -9 loses at most the last second or two), and pose
  rows are committed to SQLite as one binary chunk per ``commit_interval_s`` (≤ 1 s).

A recording can start in the past: :meth:`Recorder.start` with ``pre_roll_s`` begins at the
latest keyframe at or before ``now - pre_roll_s``; :meth:`Recorder.save_last` saves the last N
seconds as a completed session in one call (the instant-replay button). At stop the fMP4 is
remuxed without re-encoding into a ``+faststart`` MP4 that tablets can seek with range
requests. Session frame indices count video frames from the session's first keyframe;
session times are seconds from that keyframe's capture time.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import queue
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from climbd.broadcast import Broadcast, Subscription
from climbd.config import RecordingConfig
from climbd.errors import (
    AlreadyRecording,
    BeyondBuffer,
    DiskFullError,
    NoMediaYet,
    NotRecording,
    StorageError,
)
from climbd.pose import Pose
from climbd.redaction import redact_url
from climbd.statedir import FRAGMENT_NAME, VIDEO_NAME, StateDir
from climbd.storage import (
    Database,
    FragmentedMp4Writer,
    SessionRecord,
    SessionStatus,
    finalize,
)
from climbd.video import EncodedPacket

__all__ = ["Ballast", "PreRollBuffer", "Recorder"]

log = logging.getLogger(__name__)

#: holes in a session's video (camera lost), JSON [{"from_s", "to_s"}] in session seconds
GAPS_NAME = "gaps.json"



def is_disk_full(exc: BaseException | None) -> bool:
    """True if ``exc`` (or what caused it) says the disk is full: DiskFullError, ENOSPC or
    EDQUOT. EMFILE/ENFILE ("too many open files") are not a full disk."""
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, DiskFullError):
            return True
        if getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def describe_failure(exc: BaseException | None) -> str:
    """A recording failure in words; file-descriptor exhaustion (EMFILE/ENFILE) is named as
    such, with what to do, so it is never mistaken for a full disk."""
    cur, seen = exc, 0
    while cur is not None and seen < 5:
        if getattr(cur, "errno", None) in (errno.EMFILE, errno.ENFILE):
            return (f"too many open files (the process's file-descriptor limit, LimitNOFILE; "
                    f"not a full disk): {exc}")
        cur = cur.__cause__ or cur.__context__
        seen += 1
    return str(exc)

class PreRollBuffer:
    """The last ``keep_s`` seconds of packets and poses, cut at keyframes.

    Packets older than needed are dropped only in whole GOPs, so the buffer always starts
    with a keyframe and holds at least ``keep_s`` seconds when that much has been captured.
    """

    #: weight of the newest sample in :attr:`latency_s` (exponential moving average)
    LATENCY_ALPHA = 0.05

    def __init__(self, keep_s: float):
        self.keep_s = keep_s
        #: capture-to-buffer delay of the packets (encode + hand-off), seconds, smoothed;
        #: the delayed live view adds it so it is N s behind what live viewers see
        self.latency_s = 0.0
        self._latency_known = False
        self.packets: deque[EncodedPacket] = deque()
        self.poses: deque[Pose] = deque()
        self._keys: deque[EncodedPacket] = deque()  # the buffered keyframes, oldest first

    def add_packet(self, packet: EncodedPacket) -> None:
        """Append a packet and trim whole GOPs older than ``keep_s`` (O(1) amortised)."""
        latency = max(0.0, time.monotonic() - packet.timestamp)
        if self._latency_known:
            self.latency_s += self.LATENCY_ALPHA * (latency - self.latency_s)
        else:
            self.latency_s, self._latency_known = latency, True
        if not self.packets and not packet.keyframe:
            return  # never start the buffer mid-GOP
        self.packets.append(packet)
        if packet.keyframe:
            self._keys.append(packet)
        horizon = packet.timestamp - self.keep_s
        # drop the oldest GOP while the *next* keyframe is still at or before the horizon
        while len(self._keys) > 1 and self._keys[1].timestamp <= horizon:
            self._keys.popleft()
            while self.packets[0] is not self._keys[0]:
                self.packets.popleft()
        oldest = self.packets[0].timestamp
        while self.poses and self.poses[0].timestamp < oldest:
            self.poses.popleft()

    @property
    def seconds(self) -> float:
        """Seconds of video buffered now (first to last packet's capture time)."""
        b = self.packets
        return b[-1].timestamp - b[0].timestamp if len(b) > 1 else 0.0

    def packets_after(self, t: float) -> list[EncodedPacket]:
        """Buffered packets captured after ``t`` (monotonic s), oldest first.

        Scans from the newest end, so it costs O(packets returned) when called often.
        """
        out: list[EncodedPacket] = []
        for p in reversed(self.packets):
            if p.timestamp <= t:
                break
            out.append(p)
        out.reverse()
        return out

    def poses_after(self, t: float) -> list[Pose]:
        """Buffered poses captured after ``t`` (monotonic s), oldest first (O(returned))."""
        out: list[Pose] = []
        for p in reversed(self.poses):
            if p.timestamp <= t:
                break
            out.append(p)
        out.reverse()
        return out

    def add_pose(self, pose: Pose) -> None:
        """Append a pose result (dropped if older than the oldest buffered packet)."""
        if self.packets and pose.timestamp >= self.packets[0].timestamp:
            self.poses.append(pose)

    def start_keyframe(self, at: float) -> EncodedPacket | None:
        """The latest buffered keyframe captured at or before ``at`` (monotonic seconds).

        Falls back to the oldest keyframe when the buffer does not reach back to ``at``;
        None when no keyframe is buffered.
        """
        best = None
        for p in self.packets:
            if p.keyframe and (best is None or p.timestamp <= at):
                best = p
            if p.timestamp > at:
                break
        return best

    def packets_since(self, packet: EncodedPacket) -> list[EncodedPacket]:
        """Buffered packets from ``packet`` (inclusive) on."""
        out: list[EncodedPacket] = []
        for p in self.packets:
            if out or p is packet:
                out.append(p)
        return out


class Ballast:
    """A reserve file freed when the disk fills, so a failing recording can still close.

    Args:
        path: where the file lives (inside the state directory).
        size_mb: its size in MiB (0 disables it).
    """

    def __init__(self, path: Path, size_mb: float):
        self.path = path
        self.size = int(size_mb * 1024 * 1024)

    def ensure(self) -> bool:
        """Create the file if missing and there is room; True if it exists afterwards."""
        if self.size <= 0:
            return False
        if self.path.exists():
            return True
        try:
            with open(self.path, "wb") as f:
                f.truncate(0)
                os.posix_fallocate(f.fileno(), 0, self.size)
            return True
        except OSError:
            with contextlib.suppress(OSError):
                self.path.unlink()
            return False

    def release(self) -> None:
        """Delete the file to give its space back."""
        with contextlib.suppress(OSError):
            self.path.unlink()
            log.warning("disk full: released %d bytes of reserve", self.size)


class _WriterThread:
    """Feeds packets to a :class:`FragmentedMp4Writer` on its own thread."""

    def __init__(self, path: Path, first: EncodedPacket):
        self._q: queue.Queue[EncodedPacket | None] = queue.Queue()
        self._path = path
        self._origin = first.pts
        self._info = first.info
        self.error: Exception | None = None
        self.frames = 0
        self._thread = threading.Thread(target=self._run, name="climbd-writer", daemon=True)
        self._thread.start()

    def put(self, packet: EncodedPacket) -> None:
        self._q.put(packet)

    @property
    def backlog(self) -> int:
        """Packets queued but not yet written (grows when the disk is slower than video)."""
        return self._q.qsize()

    def _run(self) -> None:
        writer = None
        try:
            writer = FragmentedMp4Writer(self._path, self._info)
            while (packet := self._q.get()) is not None:
                writer.write(packet, self._origin)
                self.frames += 1
        except Exception as exc:  # DiskFullError, StorageError, av errors
            self.error = exc
            log.error("video writer for %s failed: %s", self._path, exc)
        finally:
            if writer is not None:
                try:
                    writer.close()
                except Exception as exc:
                    self.error = self.error or exc

    def close(self) -> None:
        """Drain the queue, write the trailer and join (blocking: call via a thread)."""
        self._q.put(None)
        self._thread.join()


@dataclass
class _Active:
    record: SessionRecord
    directory: Path
    start: EncodedPacket
    writer: _WriterThread
    started_mono: float
    frames: int = 0
    last_ts: float = 0.0
    last_pose_frame: int = -1
    #: holes in the video while the camera was lost: (from_s, to_s) in session time
    gaps: list[tuple[float, float]] = field(default_factory=list)
    pending: list[Pose] = field(default_factory=list)
    #: pose results (a person found or not) not yet committed: frames_analyzed
    analyzed: int = 0
    #: set whenever a pose result for this session arrives (stop waits for the last frames)
    pose_arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def duration_s(self) -> float:
        fps = self.start.info.fps or 30.0
        return max(0.0, self.last_ts - self.start.timestamp) + 1.0 / fps


class Recorder:
    """Turns the live streams into sessions (see the module docstring).

    Args:
        db: the session catalog.
        state_dir: root of the session directories (``sessions/<id>/``).
        config: recording settings.
        packets, poses: the pipeline's broadcasts.
        request_keyframe: asks the encoder for an IDR (used when nothing is buffered yet).
        source: text stored with each session (the capture source).
        ballast: reserve space released on a full disk.
        preflight: "may I start?" check run before every recording (retention sets it);
            raises e.g. :class:`~climbd.errors.InsufficientStorage` to refuse.
    """

    #: video packets (≈10 s at 30 fps) the writer may fall behind before the recording fails
    MAX_WRITER_BACKLOG = 300
    #: a pause in the video longer than this (s) is a gap (camera lost), kept in gaps.json
    GAP_S = 1.0

    def __init__(
        self,
        db: Database,
        state_dir: Path,
        config: RecordingConfig,
        packets: Broadcast[EncodedPacket],
        poses: Broadcast[Pose],
        request_keyframe: Callable[[], None],
        source: str = "",
        ballast: Ballast | None = None,
        preflight: Callable[[], None] | None = None,
    ):
        self.db = db
        self.state_dir = state_dir
        self.paths = StateDir(state_dir)
        self.config = config
        self.buffer = PreRollBuffer(config.buffer_keep_s)
        self._packets = packets
        self._poses = poses
        self._request_keyframe = request_keyframe
        self._source = redact_url(source)  # stored with sessions and shown by the API
        self._ballast = ballast
        self.preflight = preflight
        self._active: _Active | None = None
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[Any]] = []
        self._finishing: set[asyncio.Task[Any]] = set()
        self.last_error: str | None = None
        self.last_session_id: int | None = None
        #: called with the final record of every session the recorder finishes (completed
        #: or failed), on the event loop; must not block (the attempt analysis subscribes)
        self.finished_listeners: list[Callable[[SessionRecord], None]] = []
        #: called with the new record of every session the recorder starts, on the event
        #: loop; must not block (the MQTT bridge subscribes)
        self.started_listeners: list[Callable[[SessionRecord], None]] = []

    # -- state -----------------------------------------------------------------------------
    @property
    def recording(self) -> bool:
        """True while a session is recording."""
        return self._active is not None

    @property
    def active_session(self) -> tuple[int, float] | None:
        """``(session id, monotonic capture time in s of its first frame)`` while recording.

        The first frame is the session's first keyframe, pre-roll included, so a ghost
        anchored on it is aligned with the recording's time 0.
        """
        a = self._active
        return (a.record.id, a.start.timestamp) if a else None

    def status(self) -> dict[str, Any]:
        """Recording state for the health endpoint and the live page.

        Keys: ``state`` ("recording"/"idle"), ``session_id``, ``name``, ``elapsed_s`` (the
        running session's real duration so far, pre-roll included, s), ``pre_roll_s`` (the
        pre-roll it included, s; null when idle), ``frames``, ``last_error``,
        ``last_session_id``, ``pre_roll_available_s`` (video buffered now: the most a start
        can include, s), ``buffer_max_s`` (``recording.buffer_s``), ``pre_roll_default_s``
        (``recording.pre_roll_s``).
        """
        a = self._active
        return {
            "state": "recording" if a else "idle",
            "session_id": a.record.id if a else None,
            "name": a.record.name if a else None,
            "elapsed_s": round(a.duration_s, 3) if a and a.frames else 0.0,
            "pre_roll_s": a.record.pre_roll_s if a else None,
            "gaps": [list(g) for g in a.gaps] if a else [],
            "frames": a.frames if a else 0,
            "last_error": self.last_error,
            "last_session_id": self.last_session_id,
            "pre_roll_available_s": round(self.buffer.seconds, 3),
            "buffer_max_s": self.buffer.keep_s,
            "pre_roll_default_s": self.config.pre_roll_s,
        }

    # -- lifecycle -------------------------------------------------------------------------
    async def run(self) -> None:
        """Consume the broadcasts until cancelled (run as a background task)."""
        self._tasks = [
            asyncio.create_task(self._video_loop(), name="recorder-video"),
            asyncio.create_task(self._pose_loop(), name="recorder-pose"),
            asyncio.create_task(self._commit_loop(), name="recorder-commit"),
        ]
        try:
            await asyncio.gather(*self._tasks)
        finally:
            for t in self._tasks:
                t.cancel()

    async def _video_loop(self) -> None:
        sub: Subscription[EncodedPacket] = self._packets.subscribe(maxsize=600, policy="fail")
        while True:
            try:
                packet = await sub.get()
            except EOFError:
                if sub.overflowed:  # the loop was blocked for ~20 s: never silently drop
                    await self._fail("recorder fell behind the video stream")
                    sub = self._packets.subscribe(maxsize=600, policy="fail")
                    continue
                return
            self.buffer.add_packet(packet)
            a = self._active
            if a is not None and a.writer.error is None:
                if packet.info != a.start.info:
                    self._split(a)  # new stream parameters: this file cannot take them
                    continue
                self._note_gap(a, packet)
                a.writer.put(packet)
                a.frames += 1
                a.last_ts = packet.timestamp

    def _note_gap(self, a: _Active, packet: EncodedPacket) -> None:
        """Record a hole in the video (the camera was lost and came back) in the session."""
        if not a.frames:
            return
        fps = a.start.info.fps or 30.0
        gap = packet.timestamp - a.last_ts
        if gap > max(self.GAP_S, 3.0 / fps):
            start = round(a.last_ts - a.start.timestamp, 3)
            end = round(packet.timestamp - a.start.timestamp, 3)
            a.gaps.append((start, end))
            log.warning("session %d: no video from %.2f s to %.2f s (camera lost); the "
                        "recording continues after the gap", a.record.id, start, end,
                        extra={"session_id": a.record.id})

    def _split(self, a: _Active) -> None:
        """Finalise ``a`` at the drop: the camera came back with other stream parameters."""
        self._active = None
        log.warning("session %d: the camera came back with different video parameters: "
                    "recording finalised at the drop", a.record.id,
                    extra={"session_id": a.record.id})
        task = asyncio.create_task(self._finish(a, "completed", None),
                                   name=f"finish-{a.record.id}")
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)

    async def _pose_loop(self) -> None:
        sub: Subscription[Pose] = self._poses.subscribe(maxsize=300, policy="latest")
        async for pose in sub:
            self.buffer.add_pose(pose)
            a = self._active
            if a is not None:
                self._take_pose(a, pose)

    def _take_pose(self, a: _Active, pose: Pose) -> None:
        if pose.frame_number < a.start.frame_number:
            return
        a.last_pose_frame = max(a.last_pose_frame, pose.frame_number)
        a.pose_arrived.set()
        a.analyzed += 1
        if pose.detected:
            a.pending.append(pose)

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.commit_interval_s)
            a = self._active
            if a is None:
                continue
            if a.writer.error is not None:
                await self._fail(f"video: {describe_failure(a.writer.error)}", a.writer.error)
                continue
            if a.writer.backlog > self.MAX_WRITER_BACKLOG:
                await self._fail(f"the disk is too slow: {a.writer.backlog} video frames "
                                 "waiting to be written")
                continue
            try:
                await self._commit(a)
            except StorageError as exc:
                await self._fail(f"database: {describe_failure(exc)}", exc)
                continue
            if a.duration_s >= self.config.max_duration_s:
                log.info("session %d reached max_duration_s: stopping", a.record.id)
                with contextlib.suppress(NotRecording):
                    await self.stop()

    async def _commit(self, a: _Active) -> None:
        poses, a.pending = a.pending, []
        analyzed, a.analyzed = a.analyzed, 0
        if poses:
            frames = np.array([p.frame_number - a.start.frame_number for p in poses], np.int32)
            times = np.array([p.timestamp - a.start.timestamp for p in poses], np.float64)
            image = np.stack([p.image for p in poses if p.image is not None])
            world = np.stack([p.world for p in poses if p.world is not None])
        else:
            frames = np.zeros(0, np.int32)
            times = np.zeros(0, np.float64)
            image = np.zeros((0, 33, 5), np.float32)
            world = np.zeros((0, 33, 3), np.float32)
        try:
            await self.db.append_poses(a.record.id, frames, times, image, world,
                                       frame_count=a.frames, duration_s=a.duration_s,
                                       analyzed=analyzed)
        except BaseException:
            a.analyzed += analyzed
            raise

    # -- commands --------------------------------------------------------------------------
    async def start(self, name: str | None = None, description: str = "", climber: str = "",
                    pre_roll_s: float | None = None,
                    owner: tuple[int | None, int | None] = (None, None)) -> SessionRecord:
        """Start recording, reaching ``pre_roll_s`` seconds into the past (default: config).

        The start is the latest buffered keyframe at or before ``now - pre_roll_s`` (so up to
        one GOP more than asked, and no more than is buffered); the returned record's
        ``pre_roll_s`` is what was really included.

        ``owner`` is (device id, API token id) of who started it; (None, None) is the box
        itself (GPIO, hands-free): only the admin changes the privacy of those.

        Raises:
            AlreadyRecording: a session is recording.
            NoMediaYet: no keyframe arrived within 2 s (camera not running).
            DiskFullError, StorageError: the session cannot be created.
        """
        async with self._lock:
            return await self._start(name, description, climber, pre_roll_s, owner)

    async def _start(self, name: str | None, description: str, climber: str,
                     pre_roll_s: float | None,
                     owner: tuple[int | None, int | None] = (None, None)) -> SessionRecord:
        if self._active is not None:
            raise AlreadyRecording(f"session {self._active.record.id} is already recording")
        if self.preflight is not None:
            self.preflight()  # e.g. InsufficientStorage below the free-space floor
        pre = self.config.pre_roll_s if pre_roll_s is None else pre_roll_s
        pre = min(max(0.0, pre), self.buffer.keep_s)
        now = time.monotonic()
        if not self.buffer.packets:
            self._request_keyframe()
            for _ in range(40):
                await asyncio.sleep(0.05)
                if self.buffer.packets:
                    break
            else:
                raise NoMediaYet("no video from the camera yet: cannot record")
        key = self.buffer.start_keyframe(now - pre)
        assert key is not None
        if self._ballast:
            self._ballast.ensure()
        info = key.info
        record = await self.db.create_session(
            name=name or "", description=description, climber=climber, source=self._source,
            width=info.width, height=info.height, fps=info.fps,
            pre_roll_s=round(max(0.0, now - key.timestamp), 3), video_path="",
            owner_device_id=owner[0], owner_token_id=owner[1],
        )
        directory = self.paths.session_dir(record.id)
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            await self.db.finish_session(record.id, status="failed", error=str(exc))
            raise StorageError(f"cannot create {directory}: {exc}") from exc
        writer = _WriterThread(directory / FRAGMENT_NAME, key)
        a = _Active(record, directory, key, writer, now)
        # Everything buffered from the start keyframe on, with no await in between, so no
        # packet is lost or doubled between the buffer and the live stream.
        for p in self.buffer.packets_since(key):
            writer.put(p)
            a.frames += 1
            a.last_ts = p.timestamp
        for pose in self.buffer.poses:
            self._take_pose(a, pose)
        self._active = a
        self.last_error = None
        for listener in list(self.started_listeners):
            try:
                listener(record)
            except Exception:
                log.exception("session %d: started listener failed", record.id)
        log.info("recording session %d %r from %.2f s in the past", record.id, record.name,
                 now - key.timestamp, extra={"session_id": record.id})
        return record

    async def stop(self) -> SessionRecord:
        """Stop the running recording and finalise it (video remuxed, status completed).

        Raises:
            NotRecording: nothing is recording.
        """
        async with self._lock:
            a = self._active
            if a is None:
                raise NotRecording("nothing is recording")
            # Let inference catch up with the last frames (pose lags video by one inference).
            last_frame = a.start.frame_number + a.frames - 1
            deadline = time.monotonic() + 0.5
            while a.last_pose_frame < last_frame and time.monotonic() < deadline:
                a.pose_arrived.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(a.pose_arrived.wait(), deadline - time.monotonic())
            self._active = None
            return await self._finish(a, "completed", None)

    async def save_last(self, seconds: float | None = None, name: str | None = None,
                        description: str = "", climber: str = "",
                        owner: tuple[int | None, int | None] = (None, None)) -> SessionRecord:
        """Save the last ``seconds`` (default: the pre-roll) as a completed session.

        Saves what the buffer holds (less right after start-up); the record's
        ``duration_s`` says how much that was.

        Raises:
            BeyondBuffer: ``seconds`` is more than ``recording.buffer_s`` can ever hold.
            AlreadyRecording, NoMediaYet, StorageError: as :meth:`start`.
        """
        secs = self.config.pre_roll_s if seconds is None else seconds
        if secs > self.buffer.keep_s:
            raise BeyondBuffer(
                f"cannot save the last {secs:g} s: the buffer keeps {self.buffer.keep_s:g} s "
                f"(recording.buffer_s); {self.buffer.seconds:.0f} s are buffered now")
        async with self._lock:
            await self._start(name or "", description, climber, secs, owner)
        return await self.stop()

    async def _fail(self, reason: str, exc: BaseException | None = None) -> None:
        """End the running recording as failed. The reserve file is released only when the
        disk is really full (ENOSPC, SQLITE_FULL): running out of file descriptors (EMFILE)
        or any other error keeps it."""
        a = self._active
        if a is None:
            return
        self._active = None
        log.error("session %d failed: %s", a.record.id, reason,
                  extra={"session_id": a.record.id})
        if self._ballast and is_disk_full(exc):
            self._ballast.release()
        await self._finish(a, "failed", reason)

    async def _finish(self, a: _Active, status: SessionStatus, error: str | None
                      ) -> SessionRecord:
        await asyncio.to_thread(a.writer.close)
        if a.writer.error is not None and error is None:
            status, error = "failed", f"video: {a.writer.error}"
        try:
            await self._commit(a)
        except StorageError as exc:
            if self._ballast and is_disk_full(exc):
                self._ballast.release()
            status, error = "failed", error or f"database: {exc}"
        if a.gaps:
            try:
                await asyncio.to_thread(
                    (a.directory / GAPS_NAME).write_text,
                    json.dumps([{"from_s": g[0], "to_s": g[1]} for g in a.gaps]) + "\n")
            except OSError as exc:
                log.error("session %d: cannot write %s: %s", a.record.id, GAPS_NAME, exc)
        fragment = a.directory / FRAGMENT_NAME
        video = a.directory / VIDEO_NAME
        video_path = None
        frames = a.frames
        duration = a.duration_s
        try:
            info = await asyncio.to_thread(finalize, fragment, video)
            fragment.unlink(missing_ok=True)
            video_path = str(video.relative_to(self.state_dir))
            frames, duration = info.frames, info.duration_s
        except (StorageError, OSError) as exc:
            # keep the fragmented file: all its complete fragments still play
            log.error("session %d: cannot finalise video: %s", a.record.id, exc)
            if fragment.exists():
                video_path = str(fragment.relative_to(self.state_dir))
            if status == "completed":
                status, error = "failed", f"video: {exc}"
        if status == "failed":
            self.last_error = error
        for attempt in range(2):
            try:
                record = await self.db.finish_session(
                    a.record.id, status=status, frame_count=frames, duration_s=duration,
                    video_path=video_path, error=error)
                break
            except DiskFullError:
                if self._ballast and attempt == 0:
                    self._ballast.release()
                    continue
                raise
        self.last_session_id = record.id
        for listener in list(self.finished_listeners):
            try:
                listener(record)
            except Exception:
                log.exception("session %d: finished listener failed", record.id)
        log.info("session %d %s: %d frames, %.2f s", record.id, status, frames, duration,
                 extra={"session_id": record.id})
        return record

    # -- housekeeping ----------------------------------------------------------------------
    async def recover(self) -> list[SessionRecord]:
        """Mark sessions left 'recording' by a crash as interrupted and rescue their video.

        Every complete fragment of the session's fMP4 is remuxed into its ``video.mp4``;
        pose rows and counters stay as last committed (at most ``commit_interval_s`` old).
        """
        out = []
        for rec in await self.db.recover_interrupted():
            directory = self.paths.session_dir(rec.id)
            fragment = directory / FRAGMENT_NAME
            video = directory / VIDEO_NAME
            video_path, error = None, "interrupted: the daemon stopped while recording"
            if fragment.exists():
                try:
                    await asyncio.to_thread(finalize, fragment, video)
                    fragment.unlink(missing_ok=True)
                    video_path = str(video.relative_to(self.state_dir))
                except (StorageError, OSError) as exc:
                    error += f"; video could not be recovered: {exc}"
            else:
                error += "; no video was written"
            out.append(await self.db.finish_session(
                rec.id, status="interrupted", video_path=video_path, error=error))
            log.warning("session %d was interrupted by a crash; recovered", rec.id)
        return out

    async def delete(self, session_id: int) -> SessionRecord:
        """Delete a session and its files.

        Raises:
            SessionNotFound: no such session.
            AlreadyRecording: it is the session being recorded.
        """
        if self._active is not None and self._active.record.id == session_id:
            raise AlreadyRecording("stop the recording before deleting it")
        record = await self.db.delete_session(session_id)
        directory = self.paths.session_dir(session_id)
        await asyncio.to_thread(shutil.rmtree, directory, True)
        return record

"""Archive: every completed session copied to an S3-compatible bucket, in the background.

For each session (recorded, saved, hands-free or ingested) the objects are, under
``<archive.prefix or device id>/<session uuid>/``:

- ``video.mp4``: the local file, byte-identical (boto3's managed upload: multipart above
  ``archive.part_size_mb``, one part in memory at a time, parts sent one after another);
- ``poses.csv``, ``poses.json``: the pose export (:mod:`climbd.export.posedata`);
- ``session.json``: the session's metadata and attempts, with ``archived_at`` — uploaded
  last; once S3 confirms it the session's ``archived_at`` is set in the catalog.

Durability: the outbox (:class:`~climbd.storage.outbox.Outbox`, in SQLite) records which
objects are confirmed (``head_object`` size check after each upload), so a restart, a
kill -9 or an outage of the server resumes with the first unconfirmed object; failures are
retried with a doubling backoff (``retry_initial_s`` .. ``retry_max_s``). A completed
session is queued when it finishes and by a scan every :attr:`Archiver.SCAN_S` seconds
(which also finds sessions ingested by ``climbd ingest`` and any queued while the daemon
was down).

Priority: all S3 and file work runs in one worker thread that lowers itself to
``archive.nice`` and ``SCHED_IDLE`` (Linux: both are per thread), so capture, encode and
pose win the CPU. No HTTP here; the client is boto3.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from climbd.config import ArchiveConfig
from climbd.errors import StorageError
from climbd.recording import Recorder
from climbd.storage.database import Database, SessionRecord
from climbd.storage.outbox import Outbox, OutboxItem
from climbd.visibility import SYSTEM, viewing

__all__ = ["OBJECTS", "Archiver", "lower_thread_priority"]

log = logging.getLogger(__name__)

#: Object names of a session, in upload order (session.json last: it marks completion).
OBJECTS = ("video.mp4", "poses.csv", "poses.json", "session.json")


def lower_thread_priority(nice: int) -> list[str]:
    """Lower the *calling thread* to ``nice`` and SCHED_IDLE where the OS allows.

    On Linux ``nice()`` and ``sched_setscheduler(0, ...)`` act on the calling thread only
    (sched(7), "NPTL threads have their own nice value"). Returns what was applied.
    """
    applied = []
    with contextlib.suppress(OSError):
        current = os.nice(0)
        if nice > current:
            os.nice(nice - current)
        applied.append(f"nice {os.nice(0)}")
    if hasattr(os, "SCHED_IDLE"):
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            applied.append("SCHED_IDLE")
    return applied


class Archiver:
    """Uploads the outbox to the bucket (see the module docstring).

    Args:
        config: the ``[archive]`` section (enabled).
        db: the catalog; state_dir: the sessions' root; prefix: key prefix (the device id
        when ``archive.prefix`` is empty); recorder: finished sessions wake the uploader.
        client_factory: returns a boto3 S3 client (a seam for tests; default builds one
        from the config).
    """

    #: seconds between scans for completed sessions not yet queued
    SCAN_S = 30.0

    def __init__(self, config: ArchiveConfig, db: Database, state_dir: Path, prefix: str,
                 recorder: Recorder | None = None, client_factory: Any = None):
        self.config = config
        self.db = db
        self.state_dir = state_dir
        self.prefix = (config.prefix or prefix).strip("/")
        self.outbox = Outbox(db)
        self._client_factory = client_factory or self._make_client
        self._client: Any = None
        self._pool = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="climbd-archive", initializer=self._init_thread)
        self._wake = asyncio.Event()
        self.state = "starting"
        self.last_error: str | None = None
        self.current: dict[str, Any] | None = None
        self.uploaded_bytes = 0
        self.priority: list[str] = []
        self._counts: dict[str, int] = {}
        self._stopping = False
        if recorder is not None:
            recorder.finished_listeners.append(lambda rec: self._wake.set())

    # -- state -------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """Health entry: ``state`` (idle/uploading/failing/starting), ``bucket``, ``prefix``,
        ``pending``/``failing``/``archived``/``unarchived`` session counts, ``current``
        (``{"session_id", "object", "bytes"}``), ``uploaded_bytes``, ``last_error``,
        ``priority`` of the worker thread."""
        return {"state": self.state, "bucket": self.config.bucket, "prefix": self.prefix,
                "endpoint": self.config.endpoint_url or "aws", **self._counts,
                "current": self.current, "uploaded_bytes": self.uploaded_bytes,
                "last_error": self.last_error, "priority": self.priority}

    def key(self, rec: SessionRecord, name: str) -> str:
        """The object key of ``name`` for the session: ``<prefix>/<uuid>/<name>``."""
        return f"{self.prefix}/{rec.uuid}/{name}" if self.prefix else f"{rec.uuid}/{name}"

    # -- worker thread -------------------------------------------------------------------
    def _init_thread(self) -> None:
        self.priority = lower_thread_priority(self.config.nice)

    def _make_client(self) -> Any:
        import boto3
        from botocore.config import Config as BotoConfig

        cfg = self.config
        secret = cfg.secret_access_key
        if cfg.secret_access_key_file:
            secret = Path(cfg.secret_access_key_file).read_text().strip()
        return boto3.session.Session().client(
            "s3", endpoint_url=cfg.endpoint_url or None, region_name=cfg.region or None,
            aws_access_key_id=cfg.access_key_id or None,
            aws_secret_access_key=secret or None,
            config=BotoConfig(connect_timeout=5, read_timeout=60,
                              retries={"max_attempts": 3, "mode": "standard"},
                              s3={"addressing_style": "path"}))

    def _client_now(self) -> Any:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    def _put_file(self, path: Path, key: str) -> int:
        """Upload ``path`` to ``key`` (multipart above the part size) and confirm its size
        with ``head_object``; returns the size. Runs in the worker thread."""
        from boto3.s3.transfer import TransferConfig

        part = self.config.part_size_mb * 1024 * 1024
        client = self._client_now()
        size = path.stat().st_size

        def progress(n: int) -> None:
            if self._stopping:  # the daemon stops: abandon (resumed at the next start)
                raise StorageError("archive upload stopped: the daemon is stopping")
            self.uploaded_bytes += n
            if self.current is not None:
                self.current["bytes"] = self.current.get("bytes", 0) + n

        self._abort_stale(client, key)
        client.upload_file(str(path), self.config.bucket, key, Callback=progress,
                           Config=TransferConfig(multipart_threshold=part,
                                                 multipart_chunksize=part, max_concurrency=1,
                                                 use_threads=False))
        head = client.head_object(Bucket=self.config.bucket, Key=key)
        if int(head["ContentLength"]) != size:
            raise StorageError(f"{key}: the bucket has {head['ContentLength']} bytes, the "
                               f"file {size}")
        return size

    def _abort_stale(self, client: Any, key: str) -> None:
        """Abort multipart uploads of ``key`` left by an interrupted attempt (kill -9,
        outage), so their parts do not linger in the bucket. Best effort."""
        try:
            out = client.list_multipart_uploads(Bucket=self.config.bucket, Prefix=key)
            for up in out.get("Uploads", []):
                if up.get("Key") == key:
                    client.abort_multipart_upload(Bucket=self.config.bucket, Key=key,
                                                  UploadId=up["UploadId"])
                    log.info("archive: aborted an interrupted upload of %s", key)
        except Exception as exc:  # a server without ListMultipartUploads: leave them
            log.debug("archive: cannot list multipart uploads of %s: %s", key, exc)

    # -- the loop ------------------------------------------------------------------------
    async def run(self) -> None:
        """Queue and upload until cancelled."""
        loop = asyncio.get_running_loop()
        next_scan = 0.0
        while True:
            with viewing(SYSTEM):
                try:
                    if loop.time() >= next_scan:
                        added = await self.outbox.enqueue_pending()
                        if added:
                            log.info("archive: %d session(s) queued", added)
                        next_scan = loop.time() + self.SCAN_S
                    items = await self.outbox.due()
                    for item in items:
                        await self._upload(item)
                    self._counts = await self.outbox.counts()
                    if self.state != "failing" or not self._counts.get("failing"):
                        self.state = "idle"
                except StorageError as exc:
                    log.error("archive: catalog error: %s", exc)
                    self.last_error = str(exc)
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._idle_wait())
            next_scan = 0.0 if self._wake.is_set() else next_scan

    def _idle_wait(self) -> float:
        return max(0.5, min(self.SCAN_S, self.config.retry_initial_s))

    async def _upload(self, item: OutboxItem) -> None:
        try:
            rec = await self.db.get_session(item.session_id)
        except StorageError:
            return  # deleted meanwhile (the outbox row went with it)
        loop = asyncio.get_running_loop()
        self.state = "uploading"
        tmp = self.state_dir / "archive-tmp" / str(rec.id)
        try:
            for name in OBJECTS:
                if name in item.done:
                    continue
                self.current = {"session_id": rec.id, "object": name, "bytes": 0}
                path = await self._prepare(rec, name, tmp)
                await loop.run_in_executor(self._pool, self._put_file, path,
                                           self.key(rec, name))
                if name == "session.json":
                    archived_at = json.loads(path.read_text())["archived_at"]
                    await self.outbox.complete(rec.id, archived_at)
                    log.info("archive: session %d is in s3://%s/%s", rec.id,
                             self.config.bucket, self.key(rec, ""))
                else:
                    await self.outbox.mark_object(rec.id, name)
            self.last_error = None
        except Exception as exc:
            tries = item.tries + 1
            delay = min(self.config.retry_initial_s * 2 ** (tries - 1), self.config.retry_max_s)
            self.last_error = f"session {rec.id}: {type(exc).__name__}: {exc}"[:400]
            self.state = "failing"
            self._client = None  # a fresh connection next time
            log.warning("archive: %s; retrying in %.0f s", self.last_error, delay)
            with contextlib.suppress(StorageError):
                await self.outbox.failed(rec.id, self.last_error, time.time() + delay)
        finally:
            self.current = None
            await asyncio.to_thread(shutil.rmtree, tmp, True)

    async def _prepare(self, rec: SessionRecord, name: str, tmp: Path) -> Path:
        """The local file of object ``name`` (the video itself, or a file written to
        ``tmp``)."""
        if name == "video.mp4":
            if not rec.video_path:
                raise StorageError(f"session {rec.id} has no video")
            return self.state_dir / rec.video_path
        await asyncio.to_thread(tmp.mkdir, parents=True, exist_ok=True)
        from climbd.attempt_service import ensure_analysed

        try:
            attempts = await ensure_analysed(self.db, rec.id)
        except (StorageError, ValueError) as exc:
            log.warning("archive: session %d without attempts: %s", rec.id, exc)
            attempts = []
        path = tmp / name
        loop = asyncio.get_running_loop()
        if name == "session.json":
            doc = {"format": "climbd-session", "version": 1,
                   "session": {**rec.to_dict(), "archived_at": round(time.time(), 3)},
                   "archived_at": round(time.time(), 3), "attempts": attempts,
                   "objects": {n: self.key(rec, n) for n in OBJECTS}}
            await asyncio.to_thread(path.write_text, json.dumps(doc, indent=1) + "\n")
            return path
        from climbd.export.posedata import write_csv, write_json

        poses = await self.db.poses(rec.id)
        if name == "poses.csv":
            await loop.run_in_executor(self._pool, lambda: write_csv(
                poses, path, attempts=attempts))
        else:
            await loop.run_in_executor(self._pool, lambda: write_json(
                poses, path, attempts=attempts,
                session={"id": rec.id, "uuid": rec.uuid, "name": rec.name,
                         "width": rec.width, "height": rec.height, "fps": rec.fps}))
        return path

    async def close(self) -> None:
        """Stop the worker thread (an upload in flight is resumed at the next start)."""
        self._stopping = True
        await asyncio.to_thread(self._pool.shutdown, True, cancel_futures=True)

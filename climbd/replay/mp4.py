"""Frame presentation times of an MP4, read from its ISO BMFF sample tables.

A regular MP4 (every finalised session) is read from its ``moov`` box (ISO/IEC 14496-12:
``mdhd`` timescale, ``stts`` decode deltas, ``ctts`` composition offsets, ``elst`` start
offset) without reading a single packet; anything else (a fragmented file kept after a
failed remux) is demuxed with PyAV, packet by packet, without decoding.

Blocking; run it on the media worker (:class:`climbd.replay.media.MediaWorker`).
"""

from __future__ import annotations

import fractions
import logging
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["boxes", "frame_times", "moov_frame_times", "video_stream"]

log = logging.getLogger(__name__)


def video_stream(container: Any) -> Any:
    """The first video stream of a PyAV container.

    Raises:
        ValueError: the file has no video stream.
    """
    if not container.streams.video:
        raise ValueError("the file has no video stream")
    return container.streams.video[0]


def boxes(data: bytes | memoryview, start: int = 0, end: int | None = None
           ) -> Iterator[tuple[bytes, int, int]]:
    """``(type, payload start, payload end)`` of the ISO BMFF boxes in ``data[start:end]``.

    Raises:
        ValueError: a box runs past the end (a damaged file).
    """
    end = len(data) if end is None else end
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        head = 8
        if size == 1:
            size = struct.unpack_from(">Q", data, pos + 8)[0]
            head = 16
        elif size == 0:
            size = end - pos
        if size < head or pos + size > end:
            raise ValueError(f"damaged {kind!r} box")
        yield kind, pos + head, pos + size
        pos += size


def _child(data: bytes, start: int, end: int, *path: bytes) -> tuple[int, int] | None:
    for kind in path:
        found = next(((s, e) for k, s, e in boxes(data, start, end) if k == kind), None)
        if found is None:
            return None
        start, end = found
    return start, end


def moov_frame_times(video: Path) -> np.ndarray | None:
    """Frame presentation times from the ``moov`` sample tables of a regular MP4 (ISO/IEC
    14496-12: ``mdhd`` timescale, ``stts`` decode deltas, ``ctts`` composition offsets,
    ``elst`` start offset) without reading a single packet; None when the file is not one
    (fragmented, several edits, no video track): the caller then demuxes."""
    with open(video, "rb") as f:
        total = os.fstat(f.fileno()).st_size
        pos, moov = 0, None
        while pos + 8 <= total:
            f.seek(pos)
            head = f.read(16)
            size, kind = struct.unpack_from(">I4s", head)
            if size == 1:
                size = struct.unpack_from(">Q", head, 8)[0]
            elif size == 0:
                size = total - pos
            if size < 8:
                return None
            if kind == b"moov":
                f.seek(pos)
                moov = f.read(size)
                break
            pos += size
    if moov is None or len(moov) < 8:
        return None
    body = (8, len(moov))
    if _child(moov, *body, b"mvex") is not None:
        return None  # fragmented: the samples are in the fragments
    for kind, s, e in boxes(moov, *body):
        if kind != b"trak":
            continue
        hdlr = _child(moov, s, e, b"mdia", b"hdlr")
        if hdlr is None or moov[hdlr[0] + 8:hdlr[0] + 12] != b"vide":
            continue
        mdhd = _child(moov, s, e, b"mdia", b"mdhd")
        stbl = _child(moov, s, e, b"mdia", b"minf", b"stbl")
        if mdhd is None or stbl is None:
            return None
        version = moov[mdhd[0]]
        timescale = struct.unpack_from(">I", moov, mdhd[0] + (20 if version == 1 else 12))[0]
        stts = _child(moov, *stbl, b"stts")
        if stts is None or not timescale:
            return None
        n = struct.unpack_from(">I", moov, stts[0] + 4)[0]
        table = np.frombuffer(moov, ">u4", 2 * n, stts[0] + 8).reshape(n, 2).astype(np.int64)
        dts = np.concatenate([[0], np.cumsum(np.repeat(table[:, 1], table[:, 0]))])[:-1]
        pts = dts.copy()
        ctts = _child(moov, *stbl, b"ctts")
        if ctts is not None:
            signed = moov[ctts[0]] == 1
            m = struct.unpack_from(">I", moov, ctts[0] + 4)[0]
            offs = np.frombuffer(moov, ">i4" if signed else ">u4", 2 * m, ctts[0] + 8)
            offs = offs.reshape(m, 2).astype(np.int64)
            per_sample = np.repeat(offs[:, 1], offs[:, 0])
            if len(per_sample) != len(pts):
                return None
            pts += per_sample
        elst = _child(moov, s, e, b"edts", b"elst")
        if elst is not None:
            v = moov[elst[0]]
            count = struct.unpack_from(">I", moov, elst[0] + 4)[0]
            if count != 1:
                return None  # empty edits or several segments: let the demuxer decide
            media_time = struct.unpack_from(">q" if v == 1 else ">i", moov,
                                            elst[0] + (16 if v == 1 else 12))[0]
            if media_time < 0:
                return None
            pts -= media_time
        return np.sort(pts) / timescale
    return None


def frame_times(video: Path) -> np.ndarray:
    """Presentation time of every frame of ``video``, seconds, ascending (float64).

    A regular MP4 (every finalised session) is read from its ``moov`` sample tables: a few
    hundred kB for a 30-minute session, no packet read. Anything else (a fragmented file
    kept after a failed remux) is demuxed packet by packet (no decoding), stopping at a
    damaged tail like the player would.

    Raises:
        ValueError: no video stream or no frame. OSError, av.FFmpegError: unreadable file.
    """
    import av

    try:
        times = moov_frame_times(video)
    except (ValueError, struct.error, IndexError) as exc:
        log.info("%s: sample tables unreadable (%s): demuxing instead", video, exc)
        times = None
    if times is not None and len(times):
        return times

    with av.open(str(video)) as container:
        stream = video_stream(container)
        tb = float(stream.time_base or fractions.Fraction(1, 90000))
        pts: list[int] = []
        try:
            for packet in container.demux(stream):
                if packet.pts is not None and packet.size:
                    pts.append(packet.pts)
        except av.FFmpegError as exc:
            log.warning("%s: frame table stops at a damaged packet: %s", video, exc)
    if not pts:
        raise ValueError(f"{video} has no video frame")
    return np.sort(np.array(pts, np.int64)) * tb

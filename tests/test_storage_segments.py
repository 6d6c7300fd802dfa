"""Crash-safe fragmented MP4 recording, remux to faststart MP4, probing — on real H.264."""

from __future__ import annotations

import dataclasses
import errno
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import av
import pytest

from climbd.config import VideoConfig
from climbd.errors import DiskFullError, StorageError
from climbd.storage import FragmentedMp4Writer, VideoFileInfo, finalize, probe
from climbd.video import EncodedPacket, VideoEncoder

pytestmark = pytest.mark.integration

FPS = 30.0
N_FRAMES = 96  # 3.2 s: keyframes (GOP 1 s) at frames 0, 30, 60, 90


@pytest.fixture(scope="module")
def packets(media: Path) -> list[EncodedPacket]:
    """Real packets of the shared encoder: climb_short_2s.mp4 (404x720, 73 frames) looped to
    96 frames at 30 fps, one keyframe per second."""
    enc = VideoEncoder(VideoConfig(), FPS)
    out: list[EncodedPacket] = []
    with av.open(str(media / "climb_short_2s.mp4")) as c:
        frames = [f.to_ndarray(format="yuv420p") for f in c.decode(video=0)]
    for i in range(N_FRAMES):
        frame = av.VideoFrame.from_ndarray(frames[i % len(frames)], format="yuv420p")
        out += enc.encode(frame, 1000.0 + i / FPS, 500 + i)
    out += enc.flush()
    assert len(out) == N_FRAMES
    assert [p.frame_number for p in out if p.keyframe] == [500, 530, 560, 590]
    return out


def write_all(path: Path, packets: list[EncodedPacket], **kw: bool) -> FragmentedMp4Writer:
    writer = FragmentedMp4Writer(path, packets[0].info, **kw)
    for p in packets:
        writer.write(p, packets[0].pts)
    return writer


def decoded_frames(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def packet_pts(path: Path) -> list[int]:
    with av.open(str(path)) as c:
        return [p.pts for p in c.demux(video=0) if p.size]


# -- the happy path ----------------------------------------------------------------------------
def test_write_finalize_probe_counts_every_frame(tmp_path: Path,
                                                 packets: list[EncodedPacket]) -> None:
    frag, final = tmp_path / "rec.mp4", tmp_path / "video.mp4"
    writer = write_all(frag, packets)
    assert writer.frames == N_FRAMES
    assert writer.duration_s == pytest.approx(N_FRAMES / FPS, abs=1e-9)
    writer.close()
    writer.close()  # idempotent
    assert writer.bytes_written == frag.stat().st_size

    info = finalize(frag, final)
    assert isinstance(info, VideoFileInfo)
    assert (info.frames, info.width, info.height) == (N_FRAMES, 404, 720)
    assert abs(info.duration_s - N_FRAMES / FPS) <= 1 / FPS
    assert info.bytes == final.stat().st_size
    assert probe(final) == info
    assert probe(frag).frames == N_FRAMES
    assert decoded_frames(final) == N_FRAMES
    assert not (tmp_path / "video.mp4.part").exists()
    assert frag.exists()  # finalize leaves its input alone

    # pts start at 0 and keep the 90 kHz spacing of the encoder (3000 ticks at 30 fps)
    with av.open(str(final)) as c:
        pts = [p.pts for p in c.demux(video=0) if p.size]
        tb = c.streams.video[0].time_base
    assert pts[0] == 0
    assert float((pts[1] - pts[0]) * tb) == pytest.approx(1 / FPS)

    # faststart: the index (moov) comes before the media data, so range requests can seek
    head = final.read_bytes()
    assert head[4:8] == b"ftyp"
    assert 0 < head.find(b"moov") < head.find(b"mdat")


def test_pts_are_rebased_on_the_origin(tmp_path: Path, packets: list[EncodedPacket]) -> None:
    frag = tmp_path / "rec.mp4"
    tail = packets[30:]  # starts on the second keyframe
    writer = FragmentedMp4Writer(frag, tail[0].info)
    for p in tail:
        writer.write(p, tail[0].pts)
    writer.close()
    info = finalize(frag, tmp_path / "v.mp4")
    assert info.frames == len(tail)
    assert packet_pts(tmp_path / "v.mp4")[0] == 0
    assert abs(info.duration_s - len(tail) / FPS) <= 1 / FPS


# -- crash safety ----------------------------------------------------------------------------
def test_completed_fragments_are_on_disk_while_the_writer_is_open(
        tmp_path: Path, packets: list[EncodedPacket]) -> None:
    frag = tmp_path / "rec.mp4"
    writer = write_all(frag, packets[:90])  # 3 s: fragments of 0-1 s and 1-2 s are complete
    try:
        assert writer.bytes_written == frag.stat().st_size
        snapshot = tmp_path / "snapshot.mp4"
        shutil.copyfile(frag, snapshot)  # what a kill -9 would leave now
        info = probe(snapshot)
        assert info.frames >= 60 and info.duration_s >= 2.0
        assert decoded_frames(snapshot) >= 60
        rescued = finalize(snapshot, tmp_path / "rescued.mp4")
        assert rescued.frames >= 60
        assert decoded_frames(tmp_path / "rescued.mp4") == rescued.frames
    finally:
        writer.close()


def test_a_writer_killed_with_sigkill_still_finalizes(tmp_path: Path,
                                                      packets: list[EncodedPacket]) -> None:
    """A real kill -9 in the middle of the fourth GOP: the first three GOPs survive."""
    dump = tmp_path / "packets.pkl"
    info = packets[0].info
    dump.write_bytes(pickle.dumps(
        (dataclasses.astuple(info), [(p.data, p.pts, p.timestamp, p.frame_number, p.keyframe)
                                     for p in packets])))
    frag = tmp_path / "killed.mp4"
    script = f"""
import os, pickle, signal
from climbd.storage import FragmentedMp4Writer
from climbd.video import EncodedPacket, VideoStreamInfo
info_t, raw = pickle.load(open({str(dump)!r}, 'rb'))
info = VideoStreamInfo(*info_t)
w = FragmentedMp4Writer({str(frag)!r}, info)
for r in raw[:93]:
    w.write(EncodedPacket(*r, info), raw[0][1])
os.kill(os.getpid(), signal.SIGKILL)
"""
    repo = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, "-c", script], cwd=repo, timeout=120,
                          capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    info_out = finalize(frag, tmp_path / "video.mp4")
    assert info_out.frames == 90  # three complete GOPs; the 3 frames of the 4th were in memory
    assert abs(info_out.duration_s - 3.0) <= 1 / FPS
    assert decoded_frames(tmp_path / "video.mp4") == 90


def test_truncated_tails_keep_every_complete_fragment(tmp_path: Path,
                                                      packets: list[EncodedPacket]) -> None:
    frag = tmp_path / "rec.mp4"
    writer = FragmentedMp4Writer(frag, packets[0].info)
    boundaries = []  # file size when each fragment was complete: after GOP 1, 2, 3
    for p in packets:
        writer.write(p, packets[0].pts)
        if p.keyframe and writer.frames > 1:
            boundaries.append(writer.bytes_written)
    writer.close()
    data = frag.read_bytes()
    assert len(boundaries) == 3 and boundaries == sorted(boundaries)

    cuts = {b + d for b in boundaries for d in (1, 8, 100, 5000)} | {b - 1 for b in boundaries}
    cuts |= {len(data) - 1, len(data) - 100}
    for cut in sorted(cuts):
        complete = sum(1 for b in boundaries if b <= cut)
        damaged = tmp_path / f"cut{cut}.mp4"
        damaged.write_bytes(data[:cut])
        out = tmp_path / f"cut{cut}.final.mp4"
        info = finalize(damaged, out)
        assert info.frames >= 30 * complete, cut
        assert decoded_frames(out) == info.frames, cut


def test_nothing_complete_is_a_storage_error(tmp_path: Path,
                                             packets: list[EncodedPacket]) -> None:
    frag = tmp_path / "rec.mp4"
    writer = write_all(frag, packets[:20])  # the first GOP is still in memory
    shutil.copyfile(frag, tmp_path / "header_only.mp4")
    writer.close()
    with pytest.raises(StorageError):
        finalize(tmp_path / "header_only.mp4", tmp_path / "v.mp4")
    assert not (tmp_path / "v.mp4").exists() and not (tmp_path / "v.mp4.part").exists()


# -- input checks ------------------------------------------------------------------------------
def test_first_packet_must_be_a_keyframe(tmp_path: Path, packets: list[EncodedPacket]) -> None:
    writer = FragmentedMp4Writer(tmp_path / "rec.mp4", packets[0].info)
    with pytest.raises(ValueError, match="keyframe"):
        writer.write(packets[1], packets[1].pts)
    writer.write(packets[0], packets[0].pts)  # still usable
    writer.write(packets[1], packets[0].pts)
    with pytest.raises(ValueError, match="pts"):
        writer.write(packets[1], packets[0].pts)  # not increasing
    other = dataclasses.replace(packets[2], info=dataclasses.replace(packets[2].info,
                                                                      width=640))
    with pytest.raises(ValueError, match="stream parameters"):
        writer.write(other, packets[0].pts)
    writer.close()
    with pytest.raises(StorageError):
        writer.write(packets[2], packets[0].pts)
    assert probe(tmp_path / "rec.mp4").frames == 2


def test_keyframe_without_inband_parameter_sets_uses_extradata(
        tmp_path: Path, packets: list[EncodedPacket]) -> None:
    extradata = packets[0].info.extradata
    assert extradata in packets[0].data  # the encoder repeats SPS/PPS in-band...
    bare = dataclasses.replace(packets[0], data=packets[0].data.replace(extradata, b""))
    assert extradata not in bare.data  # ...this one has no SPS/PPS: only info.extradata has
    frag = tmp_path / "rec.mp4"
    writer = FragmentedMp4Writer(frag, bare.info)
    for p in [bare, *packets[1:60]]:
        writer.write(p, bare.pts)
    writer.close()
    info = finalize(frag, tmp_path / "v.mp4")
    assert info.frames == 60
    assert decoded_frames(tmp_path / "v.mp4") == 60


def test_probe_rejects_missing_and_garbage_files(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="does not exist"):
        probe(tmp_path / "nope.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(os.urandom(5000))
    with pytest.raises(StorageError):
        probe(junk)
    with pytest.raises(StorageError):
        finalize(junk, tmp_path / "out.mp4")


# -- full disk -------------------------------------------------------------------------------


def test_full_disk_raises_disk_full_and_keeps_written_fragments(
        tiny_disk: Path, tmp_path: Path, packets: list[EncodedPacket]) -> None:
    frag = tiny_disk / "rec.mp4"
    writer = FragmentedMp4Writer(frag, packets[0].info)
    written = 0
    with pytest.raises(DiskFullError) as excinfo:
        for p in packets:
            writer.write(p, packets[0].pts)
            written += 1
    assert isinstance(excinfo.value.__cause__, OSError)
    assert excinfo.value.__cause__.errno == errno.ENOSPC
    assert written >= 30  # the first ~270 KB fragment fitted in 300 KiB
    with pytest.raises(StorageError, match="failed earlier"):
        writer.write(packets[written + 1], packets[0].pts)
    writer.close()  # no second error: the failure was already reported

    rescued = finalize(frag, tmp_path / "rescued.mp4")  # onto a disk with space
    assert rescued.frames >= 30
    assert decoded_frames(tmp_path / "rescued.mp4") == rescued.frames

    # finalizing onto the full disk fails cleanly, without a partial file left behind
    with pytest.raises(DiskFullError):
        finalize(tmp_path / "rescued.mp4", tiny_disk / "video.mp4")
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["rec.mp4"]

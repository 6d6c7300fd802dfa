"""Ingest's replay video: a long-GOP / B-frame file is re-encoded to a 1 s GOP, every frame
kept at its time; a short-GOP file is copied."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from climbd.errors import StorageError
from climbd.replay.mp4 import frame_times
from climbd.storage.reencode import MAX_GOP_S, gop_problem, prepare_replay_video
from tests.conftest import SHORT

pytestmark = pytest.mark.integration


def _keyframe_gaps(path: Path) -> list[float]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        keys = [float(p.pts * p.time_base) for p in c.demux(s)
                if p.pts is not None and p.is_keyframe]
    return list(np.diff(sorted(keys)))


def test_long_gop_file_is_reencoded_with_every_frame_at_its_time(tmp_path: Path,
                                                                 media: Path) -> None:
    assert gop_problem(SHORT) is not None          # the camera export has B-frames
    out = tmp_path / "video.mp4"
    info, why = prepare_replay_video(SHORT, out)
    assert why is not None and not (tmp_path / "video.mp4.part").exists()
    assert gop_problem(out) is None                # and the result is fine as it is
    gaps = _keyframe_gaps(out)
    assert gaps and max(gaps) <= MAX_GOP_S
    src_t, out_t = frame_times(SHORT), frame_times(out)
    assert info.frames == len(src_t) == len(out_t) == 73
    np.testing.assert_allclose(out_t - out_t[0], src_t - src_t[0], atol=1e-3)
    # a second pass copies (already a 1 s GOP): byte-identical packets
    again, why2 = prepare_replay_video(out, tmp_path / "copy.mp4")
    assert why2 is None and again.frames == 73


def test_unreadable_file_is_a_storage_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"nope" * 100)
    with pytest.raises(StorageError):
        prepare_replay_video(junk, tmp_path / "o.mp4")
    assert not (tmp_path / "o.mp4").exists()

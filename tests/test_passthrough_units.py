"""Passthrough decisions as pure functions: SPS checks, SDP profile matching, NAL parsing."""

from __future__ import annotations

import pytest

from climbd.service import format_status
from climbd.streaming.profiles import offer_has_profile, profile_name
from climbd.video import (
    VideoStreamInfo,
    nal_units,
    passthrough_problem,
    profile_level_id,
)

pytestmark = pytest.mark.unit


def _info(plid: str, b_frames: bool = False, codec: str = "h264") -> VideoStreamInfo:
    return VideoStreamInfo(codec, 1280, 720, 30.0, b"", plid, "camera", b_frames)


@pytest.mark.parametrize(("plid", "b_frames", "gop", "problem"), [
    ("42e01f", False, 1.0, None),          # constrained baseline 3.1
    ("42c028", False, None, None),         # constrained baseline 4.0
    ("4d0028", False, 2.0, None),          # main 4.0, GOP at the limit
    ("640028", False, 0.5, None),          # high 4.0
    ("640028", True, 1.0, "B-frames"),
    ("6e0028", False, 1.0, "profile_idc 110"),   # High 10
    ("f40028", False, 1.0, "profile_idc 244"),   # High 4:4:4
    ("640034", False, 1.0, "level 5.2"),
    ("42e01f", False, 4.0, "keyframe every 4.0 s"),
    ("", False, None, "no SPS"),
])
def test_passthrough_problem(plid: str, b_frames: bool, gop: float | None,
                             problem: str | None) -> None:
    got = passthrough_problem(_info(plid, b_frames), gop)
    if problem is None:
        assert got is None
    else:
        assert got is not None and problem in got


def test_not_h264_is_a_problem() -> None:
    assert "hevc" in (passthrough_problem(_info("42e01f", codec="hevc")) or "")


def test_nal_units_and_profile_level_id() -> None:
    sps = bytes.fromhex("6742c01eda0280bfe5c05a83")
    pps = bytes.fromhex("68ce3c80")
    idr = bytes.fromhex("6588840021")
    data = b"\x00\x00\x00\x01" + sps + b"\x00\x00\x01" + pps + b"\x00\x00\x00\x01" + idr
    assert nal_units(data) == [sps, pps, idr]
    assert profile_level_id(sps) == "42c01e"
    with pytest.raises(ValueError):
        profile_level_id(pps)


@pytest.mark.parametrize(("offered", "camera", "ok"), [
    (["42001f", "42e01f"], "42c01e", True),      # constrained baseline, any level
    (["42001f", "42e01f", "4d001f"], "4d0028", True),
    (["42001f", "42e01f", "4d001f", "f4001f"], "640028", False),  # no High offered
    (["640c1f"], "640028", False),   # Constrained High is another profile than High
    (["640c1f", "64001f"], "640028", True),   # what desktop Chrome offers
])
def test_offer_has_profile(offered: list[str], camera: str, ok: bool) -> None:
    assert offer_has_profile(offered, camera) is ok


def test_profile_name() -> None:
    assert profile_name("640028") == "High 4"
    assert profile_name("42e01f") == "Constrained Baseline 3.1"


def test_status_line_says_the_camera_is_lost_and_reconnecting() -> None:
    line = format_status({"capture": {"state": "lost", "reconnects": 3,
                                      "error": "cannot open rtsp://u:pw@10.0.0.9/s: timed out"},
                          "pose": {"fps": 0.0}, "recording": {"state": "idle"}})
    assert line.startswith("camera lost: cannot open rtsp://***@10.0.0.9/s: timed out")
    assert "reconnecting (attempt 3)" in line and "pw" not in line

"""Device profiles: pose.workers and video.encoder "auto", and `climbd probe`."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from climbd import device
from climbd.config import Config, PoseConfig
from tests.conftest import SHORT

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parent.parent


def test_auto_workers_follow_the_cpus() -> None:
    assert [device.auto_workers(n) for n in (1, 2, 3, 4, 6, 16)] == [1, 2, 2, 3, 4, 4]
    assert device.auto_workers() == device.auto_workers(device.cpu_count())
    assert device.resolve_workers("auto") == device.auto_workers()
    assert device.resolve_workers(3) == 3


def test_pose_workers_accepts_auto_and_numbers_only() -> None:
    assert PoseConfig().workers == "auto"
    assert PoseConfig(workers=3).workers == 3
    for bad in (0, 9, "many"):
        with pytest.raises(ValidationError):
            PoseConfig(workers=bad)  # type: ignore[arg-type]


@pytest.mark.integration
def test_auto_encoder_takes_a_working_hardware_encoder_or_libx264(
        caplog: pytest.LogCaptureFixture) -> None:
    assert device.encoder_works("libx264", 320, 240) is None
    assert device.encoder_works("no_such_h264_encoder", 320, 240) is not None
    works = {name: device.encoder_works(name, 320, 240) is None for name in device.HW_ENCODERS}
    device.auto_encoder.cache_clear()
    with caplog.at_level(logging.INFO, logger="climbd.device"):
        picked = device.auto_encoder(320, 240, 30.0)
    expected = next((n for n in device.HW_ENCODERS if works[n]), "libx264")
    assert picked == expected
    if picked == "libx264":  # the fall-back says why, naming what it tried
        assert "no hardware H.264 encoder" in caplog.text
        assert all(n in caplog.text for n in device.HW_ENCODERS)
    assert device.auto_encoder(320, 240, 30.0) == picked      # probed once (cached)
    assert device.resolve_encoder("copy") == "libx264"
    assert device.resolve_encoder("libx264") == "libx264"


@pytest.mark.media
def test_climbd_probe_measures_and_says_what_the_box_sustains(tmp_path: Path,
                                                              media: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[capture]\nwidth = 960\nheight = 540\nfps = 30\n')
    out = subprocess.run(
        [sys.executable, "-m", "climbd", "probe", "--config", str(cfg), "--clip", str(SHORT),
         "--frames", "12", "--json"], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout)
    assert r["size"] == [960, 540]
    assert r["encoder"] in ("libx264", *device.HW_ENCODERS)
    assert r["decode_ms"] > 0 and r["encode_ms"] > 0 and r["pose_ms"] > 5
    assert r["pose_person_found"] > 0.5          # the clip has a climber in every frame
    s = r["sustain"]
    assert 0 < s["live_pose_coverage"] <= 1 and s["backfill_fps_one_core"] > 0
    assert s["video"] == (s["video_core_share"] < 1)
    text = subprocess.run(
        [sys.executable, "-m", "climbd", "probe", "--config", str(cfg), "--clip", str(SHORT),
         "--frames", "4"], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert text.returncode == 0, text.stderr[-2000:]
    assert "pose" in text.stdout and "ms/frame" in text.stdout and "live pose" in text.stdout


def test_config_file_still_equals_the_defaults() -> None:
    from climbd.config import load_config

    assert load_config(REPO / "config" / "climbd.toml") == Config()

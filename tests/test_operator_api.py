"""``GET /api/system``: the operator page's data, admin only, credentials redacted, the config
in force with the source of each value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from climbd.config import config_file_keys, config_report, config_sources, load_config
from climbd.redaction import redact_url
from climbd.sysinfo import CpuMeter, temperatures
from tests.securitykit import Agent, new_code, secure_daemon

pytestmark = pytest.mark.integration

SECRET = "s3cret-Pw"
CAMERA = f"rtsp://camuser:{SECRET}@127.0.0.1:8554/wall"


async def test_system_report_for_the_admin_only(tmp_path: Path) -> None:
    sections = {"capture": {"source": CAMERA, "retry_initial_s": 0.05, "retry_max_s": 0.2}}
    async with (secure_daemon(tmp_path, sections=sections) as (daemon, base),
                Agent(base) as tablet, Agent(base) as admin):
        await tablet.pair(await new_code(daemon), "wall tablet")
        await admin.setup_admin(await new_code(daemon, "admin"))
        status, _ = await tablet.req("GET", "/api/system")
        assert status == 403
        status, report = await admin.req("GET", "/api/system")
        assert status == 200, report
    assert SECRET not in json.dumps(report), "camera credentials leaked"
    assert report["camera"]["source"] == "rtsp://***@127.0.0.1:8554/wall"
    assert report["camera"]["state"] in ("running", "connecting", "stalled", "lost")
    assert report["pose"]["workers"] == 2 and report["pose"]["enabled"] is False
    assert report["video"]["encoder"] == "libx264" and report["video"]["bitrate_kbps"] == 2500
    cpu = report["cpu"]
    assert cpu["cores"] >= 1 and cpu["load1"] >= 0
    assert cpu["percent"] is None or 0 <= cpu["percent"] <= 100
    zones = temperatures()
    assert report["temperature_c"] == (max(zones.values()) if zones else None)
    assert report["disk"]["total_bytes"] > report["disk"]["free_bytes"] > 0
    assert "state" in report["retention"]
    assert report["viewers"] == 0
    assert [d["name"] for d in report["devices"]] == ["wall tablet"]
    assert all("secret" not in k and "hash" not in k for d in report["devices"] for k in d)
    entries = {e["key"]: e for e in report["config"]}
    assert entries["capture.source"]["value"] == "rtsp://***@127.0.0.1:8554/wall"
    assert entries["recording.buffer_s"] == {"key": "recording.buffer_s", "value": 30.0,
                                             "source": "default"}
    assert entries["live.delay_s"]["value"] == 10.0
    assert len(entries) == len(report["config"]) > 60


@pytest.mark.unit
def test_config_sources_default_file_cli(tmp_path: Path) -> None:
    path = tmp_path / "climbd.toml"
    path.write_text('[pose]\nworkers = 1\n[capture]\nsource = "/dev/video2"\n'
                    '[video.options]\ncrf = "23"\n')
    overrides = {"capture.source": "/tmp/clip.mp4", "capture.loop": None,
                 "server.port": 9000, "server.host": None}
    sources = config_sources(config_file_keys(path), overrides)
    config = load_config(path)
    report = {e["key"]: e for e in config_report(config, sources)}
    assert report["pose.workers"] == {"key": "pose.workers", "value": 1, "source": "file"}
    assert report["capture.source"]["source"] == "cli"  # the command line wins
    assert report["server.port"]["source"] == "cli"
    assert report["capture.loop"]["source"] == "default"  # --loop not given
    assert report["video.options"] == {"key": "video.options", "value": {"crf": "23"},
                                       "source": "file"}
    assert report["recording.pre_roll_s"]["source"] == "default"
    assert config_file_keys(tmp_path / "missing.toml") == set()


@pytest.mark.unit
def test_redaction_and_cpu_meter(tmp_path: Path) -> None:
    assert redact_url(CAMERA) == "rtsp://***@127.0.0.1:8554/wall"
    assert redact_url("rtsp://127.0.0.1/x") == "rtsp://127.0.0.1/x"
    assert redact_url("/dev/video0") == "/dev/video0"
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 1 2 3 4\n")
    meter = CpuMeter(stat)
    stat.write_text("cpu  200 0 200 1400 200 0 0 0 0 0\n")  # +200 busy of +1000 ticks
    assert meter.sample()["percent"] == pytest.approx(20.0)
    zones = tmp_path / "thermal"
    (zones / "thermal_zone0").mkdir(parents=True)
    (zones / "thermal_zone0" / "temp").write_text("48312\n")
    (zones / "thermal_zone0" / "type").write_text("cpu-thermal\n")
    (zones / "thermal_zone1").mkdir()
    (zones / "thermal_zone1" / "temp").write_text("garbage")
    assert temperatures(zones) == {"cpu-thermal": 48.3}
    assert temperatures(tmp_path / "none") == {}

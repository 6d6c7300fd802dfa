"""MQTT against a real Mosquitto broker on 127.0.0.1 (started by each test): availability and
the last will, Home Assistant discovery, recording/set driving real recordings, session and
attempt events, and a 30 s broker outage during a recording."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from climbd.mqtt import discovery_documents, parse_command
from climbd.pose import Pose
from climbd.visibility import SYSTEM, viewing
from tests.attempts_support import Scene, template
from tests.conftest import SHORT, async_wait_until
from tests.mqtt_support import Broker, Subscriber
from tests.securitykit import secure_daemon, wait_frames

pytestmark = pytest.mark.system   # a real broker process, its outages

BASE = "climbd/wall1"


async def get(daemon: Any, session_id: int) -> Any:
    """The session as the box sees it (no request viewer)."""
    with viewing(SYSTEM):
        return await daemon.db.get_session(session_id)


def mqtt_section(broker: Broker, **kw: Any) -> dict[str, Any]:
    return {"mqtt": {"enabled": True, "url": broker.url, "device_id": "wall1",
                     "stats_interval_s": 0.5, "retry_initial_s": 0.2, "retry_max_s": 1.0,
                     **kw}}


#: Keys Home Assistant's MQTT discovery requires or needs for the device registry, by
#: component (switch.mqtt: command_topic; button.mqtt: command_topic; sensor.mqtt:
#: state_topic; unique_id + device.identifiers for the device registry).
REQUIRED = {"switch": {"command_topic", "state_topic", "unique_id", "device", "name"},
            "button": {"command_topic", "unique_id", "device", "name"},
            "sensor": {"state_topic", "unique_id", "device", "name"}}


def check_discovery(docs: dict[str, dict[str, Any]]) -> None:
    components = sorted(t.split("/")[1] for t in docs)
    assert components.count("switch") == 1 and components.count("button") == 1
    assert components.count("sensor") >= 2
    unique = {d["unique_id"] for d in docs.values()}
    assert len(unique) == len(docs)
    devices = {json.dumps(d["device"], sort_keys=True) for d in docs.values()}
    assert len(devices) == 1, "one device block"
    device = docs[next(iter(docs))]["device"]
    assert device["identifiers"] and device["name"]
    for topic, doc in docs.items():
        parts = topic.split("/")
        assert parts[0] == "homeassistant" and parts[-1] == "config" and len(parts) == 5
        missing = REQUIRED[parts[1]] - set(doc)
        assert not missing, f"{topic} lacks {missing}"
        assert doc["availability_topic"] == f"{BASE}/availability"
    switch = next(d for t, d in docs.items() if "/switch/" in t)
    assert switch["command_topic"] == f"{BASE}/recording/set"
    assert (switch["payload_on"], switch["payload_off"]) == ("ON", "OFF")
    button = next(d for t, d in docs.items() if "/button/" in t)
    assert button["payload_press"] == "SAVE_LAST"
    assert any(d.get("state_topic") == f"{BASE}/attempt" for d in docs.values())
    assert any("camera" in d.get("value_template", "") for d in docs.values())


def test_commands_parse_and_bad_ones_are_refused() -> None:
    assert parse_command(b"ON").action == "ON" and parse_command(b" off\n").action == "OFF"
    c = parse_command(b'{"name": "flash", "seconds": 4}')
    assert (c.action, c.name, c.seconds) == ("SAVE_LAST", "flash", 4.0)
    assert parse_command(b'{"command": "ON", "name": "x"}').action == "ON"
    for bad in (b"START", b"[1]", b'{"seconds": "a"}', b'{"command": "FLY"}',
                b'{"seconds": -1}', b'{"name": 5}'):
        with pytest.raises(ValueError):
            parse_command(bad)
    check_discovery(discovery_documents(BASE, "wall1", "homeassistant"))


def climb_scene() -> Scene:
    """Stand 2 s, lift off, up 1 m and down, land at ~9 s, stand 2 s (30 fps)."""
    stand, climb = template(), template(arms_up=True, left_foot_up_m=0.35)
    s = Scene(fps=30.0, width=404, height=720, ppm=250.0, floor_px=690.0)
    s.hold(2.0, stand, 200).move(0.2, climb, 200, 200, 0.0, 0.4)
    s.move(3.3, climb, 200, 200, 0.4, 1.4).move(3.3, climb, 200, 200, 1.4, 0.3)
    s.move(0.2, climb, 200, 200, 0.3, 0.0).hold(2.0, stand, 200)
    return s


async def test_discovery_commands_and_events_on_a_real_broker(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "broker")
    sub = Subscriber(broker.port, f"{BASE}/#", "homeassistant/#")
    try:
        async with secure_daemon(tmp_path, sections=mqtt_section(broker)) as (daemon, _):
            await sub.until(f"{BASE}/availability", lambda p: p == "online")
            await sub.until(f"{BASE}/recording/state", lambda p: p == "OFF")
            await async_wait_until(lambda: len([t for t, *_ in sub.messages
                                                if t.startswith("homeassistant/")]) >= 6)
            docs = {t: json.loads(p) for t, p, _, _ in sub.messages
                    if t.startswith("homeassistant/")}
            check_discovery(docs)
            stats = json.loads(await sub.until(f"{BASE}/stats"))
            assert {"fps", "pose_fps", "viewers", "camera", "disk_free_bytes"} <= set(stats)
            await wait_frames(daemon, 40)

            # ON / OFF drive a real recording; the events carry the session
            sub.publish(f"{BASE}/recording/set", "ON")
            await async_wait_until(lambda: daemon.recorder.recording, 20)
            await sub.until(f"{BASE}/recording/state", lambda p: p == "ON")
            # attempts while recording: the live detector's events go out with the session
            s, t0 = climb_scene(), time.monotonic()
            for i, (t, im) in enumerate(zip(s.times, s.image, strict=True)):
                daemon.attempts.feed(Pose(i, t0 + t, s.width, s.height, im, None))
            await async_wait_until(lambda: daemon.recorder.status()["frames"] >= 45, 20)
            sub.publish(f"{BASE}/recording/set", "OFF")
            done = json.loads(await sub.until(
                f"{BASE}/events", lambda p: json.loads(p)["type"] == "session_completed"))
            started = next(e for e in sub.events(BASE) if e["type"] == "session_started")
            assert started["session_id"] == done["session_id"]
            assert done["session_uuid"] and done["ended_at"] >= done["started_at"]
            rec = await get(daemon, done["session_id"])
            assert rec.status == "completed" and rec.frame_count >= 45
            assert (daemon.state_dir / rec.video_path).stat().st_size > 10_000
            kinds = [e["type"] for e in sub.events(BASE)]
            assert "attempt_started" in kinds and "attempt_ended" in kinds
            att = [e for e in sub.events(BASE) if e["type"].startswith("attempt_")]
            assert all(e["session_id"] == rec.id for e in att)
            assert att[0]["number"] == att[1]["number"]
            assert sub.on(f"{BASE}/attempt")[-1] == "idle" and "climbing" in sub.on(
                f"{BASE}/attempt")
            await sub.until(f"{BASE}/recording/state", lambda p: p == "OFF")
            assert sub.on(f"{BASE}/recording/state")[-1] == "OFF"

            # SAVE_LAST and the JSON form make saved sessions
            n_done = len([e for e in sub.events(BASE) if e["type"] == "session_completed"])
            sub.publish(f"{BASE}/recording/set", "SAVE_LAST")
            sub.publish(f"{BASE}/recording/set", json.dumps({"name": "flash", "seconds": 1.0}))
            await async_wait_until(lambda: len([e for e in sub.events(BASE)
                                                if e["type"] == "session_completed"])
                                   >= n_done + 2, 30)
            saved = [e for e in sub.events(BASE) if e["type"] == "session_completed"][n_done:]
            assert saved[1]["name"] == "flash"
            for e in saved:
                r = await get(daemon, e["session_id"])
                assert r.status == "completed" and r.frame_count > 0

            # a bad command is answered, nothing recorded
            sub.publish(f"{BASE}/recording/set", "LAUNCH")
            rej = json.loads(await sub.until(
                f"{BASE}/events", lambda p: json.loads(p)["type"] == "command_rejected"))
            assert "LAUNCH" in rej["command"] and not daemon.recorder.recording

            # Home Assistant restarting: discovery is sent again
            before = len([1 for t, *_ in sub.messages
                          if t.endswith("/switch/wall1/recording/config")])
            sub.publish("homeassistant/status", "online")
            await async_wait_until(lambda: len([
                1 for t, *_ in sub.messages
                if t.endswith("/switch/wall1/recording/config")]) > before)
            health = daemon.health()["mqtt"]
            assert health["state"] == "connected" and health["dropped"] == 0
        # a clean stop says offline
        await sub.until(f"{BASE}/availability", lambda p: p == "offline")
    finally:
        sub.close()
        broker.stop()


async def test_broker_away_30_s_during_a_recording(tmp_path: Path) -> None:
    """The broker stops for 30 s mid-recording: the recording goes on and completes; its
    events arrive once the broker is back."""
    broker = Broker(tmp_path / "broker")
    sub = Subscriber(broker.port, f"{BASE}/#")
    try:
        async with secure_daemon(tmp_path, clip=SHORT,
                                 sections=mqtt_section(broker)) as (daemon, _):
            await sub.until(f"{BASE}/availability", lambda p: p == "online")
            await wait_frames(daemon, 40)
            rec = await daemon.recorder.start(name="outage")
            await sub.until(f"{BASE}/events", lambda p: json.loads(p)["type"] == "session_started")
            sub.close()
            broker.stop()
            await async_wait_until(lambda: daemon.health()["mqtt"]["state"] == "disconnected")
            down_at = time.monotonic()
            frames_at_drop = daemon.recorder.status()["frames"]
            # 30 s without a broker: poll that the recording keeps taking frames
            while time.monotonic() - down_at < 30.0:
                await asyncio.sleep(0.5)
                assert daemon.recorder.recording
            assert daemon.recorder.status()["frames"] > frames_at_drop + 30 * 10
            final = await daemon.recorder.stop()  # while the broker is still away
            assert final.status == "completed"
            assert daemon.health()["mqtt"]["queued"] >= 1
            broker.start()  # same port
            sub = Subscriber(broker.port, f"{BASE}/#")
            ev = json.loads(await sub.until(
                f"{BASE}/events", lambda p: json.loads(p)["type"] == "session_completed"))
            assert ev["session_id"] == rec.id and ev["duration_s"] >= 30
            await sub.until(f"{BASE}/availability", lambda p: p == "online")
            assert sub.on(f"{BASE}/recording/state")[-1] == "OFF"
            h = daemon.health()["mqtt"]
            assert h["state"] == "connected" and h["reconnects"] >= 1 and h["dropped"] == 0
            r = await get(daemon, rec.id)
            assert r.status == "completed" and r.duration_s >= 30
            assert r.frame_count >= 30 * 15  # kept taking frames (loaded CI: not 30 fps)
    finally:
        sub.close()
        broker.stop()


def test_availability_is_retained_and_the_last_will_fires_after_kill_9(
        tmp_path: Path, daemon_factory: Any) -> None:
    broker = Broker(tmp_path / "broker")
    conf = tmp_path / "climbd.toml"
    conf.write_text(f"""
[pose]
enabled = false
[mqtt]
enabled = true
url = "{broker.url}"
device_id = "wall1"
""")
    sub = Subscriber(broker.port, f"{BASE}/availability")
    try:
        d = daemon_factory(SHORT, "--config", str(conf))
        d.wait_ready(capture=False)
        sub.wait(f"{BASE}/availability", lambda p: p == "online", 60)
        late = Subscriber(broker.port, f"{BASE}/availability")  # retained: seen at once
        late.wait(f"{BASE}/availability", lambda p: p == "online")
        assert late.messages[0][2] is True, "availability is retained"
        late.close()
        d.kill()  # SIGKILL: no clean DISCONNECT, the broker sends the will
        sub.wait(f"{BASE}/availability", lambda p: p == "offline", 60)
        after = Subscriber(broker.port, f"{BASE}/availability")
        assert after.wait(f"{BASE}/availability") == "offline"  # the will is retained
        after.close()
    finally:
        sub.close()
        broker.stop()

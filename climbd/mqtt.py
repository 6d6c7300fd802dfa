"""MQTT bridge: events, stats and commands on a broker, and Home Assistant discovery.

Topics under ``<mqtt.topic_prefix>/<device_id>/`` (Frigate's convention):

- ``availability``: ``online`` (retained) on every connect; ``offline`` is the last will
  (the broker publishes it when the connection drops without a DISCONNECT: kill -9, power
  loss, network cut) and is published on a clean stop.
- ``recording/state``: ``ON``/``OFF`` (retained).
- ``recording/set``: commands ``ON`` (start), ``OFF`` (stop), ``SAVE_LAST`` (keep the
  pre-roll buffer as a session), or JSON ``{"command": "ON"|"OFF"|"SAVE_LAST", "name": str,
  "seconds": float}`` (``seconds``: the pre-roll of ``ON`` / the length of ``SAVE_LAST``;
  without ``command``, ``SAVE_LAST`` if ``seconds`` is given, else ``ON``). A command that
  fails is answered by a ``command_rejected`` event.
- ``events``: JSON, one message per event (QoS 1, not retained): ``type`` is
  ``session_started``, ``session_completed``, ``session_failed``, ``attempt_started``,
  ``attempt_ended`` or ``command_rejected``; with ``session_id``, ``session_uuid``, ``name``
  and unix times (s).
- ``attempt``: ``climbing``/``idle`` (retained); ``stats``: periodic JSON (``fps``,
  ``pose_fps``, ``viewers``, ``camera``, ``disk_free_bytes``, ``recording``), retained so a
  sensor has a value at once.

Home Assistant MQTT discovery (https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery):
retained ``<discovery_prefix>/<component>/<device_id>/<object_id>/config`` documents for a
switch (recording), a button (save last), sensors (attempt, camera, fps, free disk), all
with ``unique_id``, the availability topic and one ``device`` block; sent on every connect
and again whenever Home Assistant publishes ``online`` on ``<discovery_prefix>/status``.

The broker being away never blocks capture or recording: every publish is a non-blocking
append to a bounded queue (``mqtt.queue_max``; the oldest message is dropped beyond it and
counted), retained state is re-sent on reconnect, and the connection is retried with a
doubling backoff. This module has no HTTP; the client is aiomqtt (over paho-mqtt).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import re
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiomqtt

from climbd import __version__
from climbd.attempt_service import EventHub, LiveAttemptEvent
from climbd.config import MqttConfig
from climbd.recording import Recorder
from climbd.storage.database import SessionRecord

__all__ = ["MqttBridge", "device_id_of", "discovery_documents", "parse_command"]

log = logging.getLogger(__name__)


def device_id_of(configured: str) -> str:
    """The box's id in topics: ``configured``, else the host name (``socket.gethostname``)."""
    return configured or socket.gethostname() or "climbd"


@dataclass(frozen=True)
class Command:
    """A parsed ``recording/set`` command: ``action`` is ``ON``, ``OFF`` or ``SAVE_LAST``."""

    action: str
    name: str | None = None
    seconds: float | None = None


def parse_command(payload: bytes) -> Command:
    """Parse a ``recording/set`` payload (see the module docstring).

    Raises:
        ValueError: not a known command, or JSON of the wrong shape (the message says what).
    """
    text = payload.decode("utf-8", "replace").strip()
    if text.upper() in ("ON", "OFF", "SAVE_LAST"):
        return Command(text.upper())
    try:
        data = json.loads(text)
    except ValueError:
        raise ValueError(f"unknown command {text[:60]!r}: use ON, OFF, SAVE_LAST or JSON"
                         ) from None
    if not isinstance(data, dict):
        raise ValueError("a JSON command must be an object")
    seconds = data.get("seconds")
    if seconds is not None and (isinstance(seconds, bool)
                                or not isinstance(seconds, (int, float)) or seconds < 0):
        raise ValueError("seconds must be a number >= 0")
    name = data.get("name")
    if name is not None and not isinstance(name, str):
        raise ValueError("name must be a string")
    action = data.get("command", "SAVE_LAST" if seconds is not None else "ON")
    if not isinstance(action, str) or action.upper() not in ("ON", "OFF", "SAVE_LAST"):
        raise ValueError(f"command must be ON, OFF or SAVE_LAST, not {action!r}")
    return Command(action.upper(), name[:200] if name else None,
                   None if seconds is None else float(seconds))


def discovery_documents(base: str, device_id: str, discovery_prefix: str
                        ) -> dict[str, dict[str, Any]]:
    """Home Assistant discovery documents by config topic.

    Keys follow Home Assistant's MQTT switch/button/sensor schemas: a switch needs
    ``command_topic`` (``state_topic`` makes it non-optimistic), a button ``command_topic``,
    a sensor ``state_topic``; ``unique_id`` + ``device.identifiers`` put them in the
    device registry (https://www.home-assistant.io/integrations/switch.mqtt/,
    .../button.mqtt/, .../sensor.mqtt/).
    """
    node = re.sub(r"[^A-Za-z0-9_-]", "_", device_id)
    device = {"identifiers": [f"climbd_{node}"], "name": f"climbd {device_id}",
              "manufacturer": "climbd", "model": "climbing-wall replay box",
              "sw_version": __version__}
    common = {"availability_topic": f"{base}/availability", "payload_available": "online",
              "payload_not_available": "offline", "device": device}
    docs: dict[str, dict[str, Any]] = {
        "switch/recording": {
            "name": "Recording", "unique_id": f"climbd_{node}_recording",
            "command_topic": f"{base}/recording/set", "state_topic": f"{base}/recording/state",
            "payload_on": "ON", "payload_off": "OFF", "state_on": "ON", "state_off": "OFF",
            "icon": "mdi:record-rec"},
        "button/save_last": {
            "name": "Save last", "unique_id": f"climbd_{node}_save_last",
            "command_topic": f"{base}/recording/set", "payload_press": "SAVE_LAST",
            "icon": "mdi:content-save"},
        "sensor/attempt": {
            "name": "Attempt", "unique_id": f"climbd_{node}_attempt",
            "state_topic": f"{base}/attempt", "icon": "mdi:human-handsup"},
        "sensor/camera": {
            "name": "Camera", "unique_id": f"climbd_{node}_camera",
            "state_topic": f"{base}/stats", "value_template": "{{ value_json.camera }}",
            "icon": "mdi:cctv"},
        "sensor/fps": {
            "name": "Camera fps", "unique_id": f"climbd_{node}_fps",
            "state_topic": f"{base}/stats", "value_template": "{{ value_json.fps }}",
            "unit_of_measurement": "fps", "state_class": "measurement"},
        "sensor/disk_free": {
            "name": "Free disk", "unique_id": f"climbd_{node}_disk_free",
            "state_topic": f"{base}/stats",
            "value_template": "{{ (value_json.disk_free_bytes / 1e9) | round(2) }}",
            "unit_of_measurement": "GB", "device_class": "data_size",
            "state_class": "measurement"},
    }
    out = {}
    for key, doc in docs.items():
        component, object_id = key.split("/")
        out[f"{discovery_prefix}/{component}/{node}/{object_id}/config"] = {**doc, **common}
    return out


@dataclass
class _Message:
    topic: str
    payload: str
    qos: int = 1
    retain: bool = False


class MqttBridge:
    """The box on an MQTT broker (see the module docstring).

    Args:
        config: the ``[mqtt]`` section.
        recorder: started/finished sessions become events; commands drive it.
        attempt_events: the attempts event hub (live attempt start/end).
        stats: returns the periodic stats dict (called on the event loop, must be cheap).
    """

    def __init__(self, config: MqttConfig, recorder: Recorder, attempt_events: EventHub,
                 stats: Callable[[], dict[str, Any]]):
        self.config = config
        self.device_id = device_id_of(config.device_id)
        self.base = f"{config.topic_prefix}/{self.device_id}"
        self._recorder = recorder
        self._stats = stats
        self._queue: collections.deque[_Message] = collections.deque(maxlen=config.queue_max)
        self._retained: dict[str, str] = {}
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()  # set while the queue is empty and all was sent
        self._client: aiomqtt.Client | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.state = "connecting"
        self.last_error: str | None = None
        self.connected_since: float | None = None
        self.reconnects = 0
        self.dropped = 0
        self.sent = 0
        self.commands = 0
        self._retry_at: float | None = None
        self._closing = False
        self._command_lock = asyncio.Lock()  # commands run one after the other, in order
        recorder.started_listeners.append(self._on_started)
        recorder.finished_listeners.append(self._on_finished)
        self._unsubscribe = attempt_events.subscribe(self._on_attempt)
        self._set_retained("recording/state", "ON" if recorder.recording else "OFF")
        self._set_retained("attempt", "idle")

    # -- state ---------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """Health entry: ``state`` (connecting/connected/disconnected/stopped), ``broker``
        (host:port), ``topic`` base, ``last_error``, ``connected_for_s``, ``reconnects``,
        ``queued``/``dropped``/``sent`` messages, ``retry_in_s``, ``commands`` handled."""
        now = time.monotonic()
        return {
            "state": self.state, "broker": self._hostport(), "topic": self.base,
            "last_error": self.last_error,
            "connected_for_s": round(now - self.connected_since, 1)
            if self.connected_since is not None else None,
            "reconnects": self.reconnects, "queued": len(self._queue),
            "dropped": self.dropped, "sent": self.sent, "commands": self.commands,
            "retry_in_s": round(max(0.0, self._retry_at - now), 1)
            if self._retry_at is not None and self.state != "connected" else None,
        }

    def _hostport(self) -> str:
        u = urlsplit(self.config.url)
        return f"{u.hostname}:{self._port()}"

    def _port(self) -> int:
        u = urlsplit(self.config.url)
        return u.port or (8883 if u.scheme == "mqtts" else 1883)

    # -- publishing (never blocks) --------------------------------------------------------
    def _enqueue(self, msg: _Message) -> None:
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1  # deque drops the oldest
        self._queue.append(msg)
        self._drained.clear()
        self._wake.set()

    def _set_retained(self, sub: str, payload: str) -> None:
        topic = f"{self.base}/{sub}"
        self._retained[topic] = payload
        if self.state == "connected":
            self._enqueue(_Message(topic, payload, 1, True))

    def publish_event(self, event: dict[str, Any]) -> None:
        """Queue one event for ``<base>/events`` (QoS 1); adds ``device_id`` and ``time``."""
        body = {"device_id": self.device_id, "time": round(time.time(), 3), **event}
        self._enqueue(_Message(f"{self.base}/events", json.dumps(body), 1, False))

    def _session_event(self, kind: str, rec: SessionRecord) -> dict[str, Any]:
        return {"type": kind, "session_id": rec.id, "session_uuid": rec.uuid,
                "name": rec.name, "status": rec.status, "started_at": rec.created_at,
                "ended_at": None if rec.status == "recording" else rec.updated_at,
                "duration_s": rec.duration_s, "frames": rec.frame_count, "error": rec.error}

    def _on_started(self, rec: SessionRecord) -> None:
        self._set_retained("recording/state", "ON")
        self.publish_event(self._session_event("session_started", rec))

    def _on_finished(self, rec: SessionRecord) -> None:
        self._set_retained("recording/state", "ON" if self._recorder.recording else "OFF")
        kind = "session_completed" if rec.status == "completed" else "session_failed"
        self.publish_event(self._session_event(kind, rec))

    def _on_attempt(self, ev: LiveAttemptEvent) -> None:
        active = self._recorder.active_session
        self._set_retained("attempt", "climbing" if ev.kind == "start" else "idle")
        self.publish_event({
            "type": "attempt_started" if ev.kind == "start" else "attempt_ended",
            "number": ev.number, "at": round(ev.wall_time, 3), "end_reason": ev.end_reason,
            "session_id": active[0] if active else None,
            "session_time_s": round(ev.t - active[1], 3) if active else None})

    # -- connection ------------------------------------------------------------------------
    def _client_for(self) -> aiomqtt.Client:
        cfg = self.config
        password = None
        if cfg.password_file:
            password = Path(cfg.password_file).read_text().strip()
        tls = ssl.create_default_context() if cfg.url.startswith("mqtts://") else None
        return aiomqtt.Client(
            urlsplit(cfg.url).hostname or "localhost", self._port(),
            username=cfg.username or None, password=password,
            identifier=f"climbd-{self.device_id}", keepalive=cfg.keepalive_s,
            will=aiomqtt.Will(f"{self.base}/availability", "offline", qos=1, retain=True),
            tls_context=tls, timeout=10)

    async def run(self) -> None:
        """Connect, serve and reconnect with a doubling backoff until cancelled."""
        delay = self.config.retry_initial_s
        while not self._closing:
            try:
                client = self._client_for()
                async with client:
                    self._client = client
                    await self._serve(client)
            except (aiomqtt.MqttError, OSError) as exc:
                self.last_error = str(exc) or type(exc).__name__
            finally:
                self._client = None
                if self.connected_since is not None:
                    delay = self.config.retry_initial_s  # it was up: start the backoff again
                    self.reconnects += 1
                self.connected_since = None
            if self._closing:
                break
            self.state = "disconnected"
            log.warning("mqtt: %s unreachable (%s); retrying in %.1f s", self._hostport(),
                        self.last_error, delay)
            self._retry_at = time.monotonic() + delay
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.config.retry_max_s)

    async def _serve(self, client: aiomqtt.Client) -> None:
        self.state = "connected"
        self.connected_since = time.monotonic()
        self.last_error = None
        log.info("mqtt: connected to %s as %s", self._hostport(), self.base)
        await client.subscribe(f"{self.base}/recording/set", qos=1)
        if self.config.discovery:
            await client.subscribe(f"{self.config.discovery_prefix}/status", qos=1)
        await client.publish(f"{self.base}/availability", "online", qos=1, retain=True)
        await self._publish_discovery(client)
        for topic, payload in list(self._retained.items()):
            await client.publish(topic, payload, qos=1, retain=True)
        tasks = [asyncio.create_task(self._sender(client), name="mqtt-send"),
                 asyncio.create_task(self._stats_loop(), name="mqtt-stats")]
        try:
            async for message in client.messages:
                await self._on_message(client, message)
            raise aiomqtt.MqttError("connection closed")
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError, OSError):
                    await t

    async def _publish_discovery(self, client: aiomqtt.Client) -> None:
        if not self.config.discovery:
            return
        docs = discovery_documents(self.base, self.device_id, self.config.discovery_prefix)
        for topic, doc in docs.items():
            await client.publish(topic, json.dumps(doc), qos=1, retain=True)

    async def _sender(self, client: aiomqtt.Client) -> None:
        while True:
            while self._queue:
                msg = self._queue[0]
                await client.publish(msg.topic, msg.payload, qos=msg.qos, retain=msg.retain,
                                     timeout=10)
                if self._queue and self._queue[0] is msg:
                    self._queue.popleft()
                self.sent += 1
            self._drained.set()
            self._wake.clear()
            await self._wake.wait()

    async def _stats_loop(self) -> None:
        while True:
            try:
                payload = json.dumps(self._stats())
            except Exception as exc:  # a broken stats source must not end the connection
                payload = json.dumps({"error": str(exc)})
            self._set_retained("stats", payload)
            await asyncio.sleep(self.config.stats_interval_s)

    async def _on_message(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        topic = message.topic.value
        payload = bytes(message.payload) if isinstance(message.payload, (bytes, bytearray)) \
            else str(message.payload).encode()
        if topic == f"{self.config.discovery_prefix}/status":
            if payload.strip() == b"online":
                log.info("mqtt: Home Assistant is online: sending discovery again")
                await self._publish_discovery(client)
            return
        if topic == f"{self.base}/recording/set":
            self._spawn(self._command(payload))

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _command(self, payload: bytes) -> None:
        async with self._command_lock:
            await self._run_command(payload)

    async def _run_command(self, payload: bytes) -> None:
        self.commands += 1
        try:
            cmd = parse_command(payload)
            log.info("mqtt: command %s", cmd)
            if cmd.action == "ON":
                if not self._recorder.recording:
                    await self._recorder.start(name=cmd.name, pre_roll_s=cmd.seconds)
            elif cmd.action == "OFF":
                if self._recorder.recording:
                    await self._recorder.stop()
            else:
                await self._recorder.save_last(cmd.seconds, name=cmd.name)
        except Exception as exc:
            log.warning("mqtt: command %r rejected: %s", payload[:80], exc)
            self.publish_event({"type": "command_rejected", "command":
                                payload[:200].decode("utf-8", "replace"), "error": str(exc)})

    async def close(self) -> None:
        """Publish ``offline`` (retained) and disconnect cleanly; stop the tasks."""
        self._closing = True
        self._unsubscribe()
        client = self._client
        if client is not None:
            with contextlib.suppress(aiomqtt.MqttError, OSError, asyncio.TimeoutError):
                # what is still queued first (e.g. the last session_completed), briefly
                if self._queue:
                    await asyncio.wait_for(self._drained.wait(), 2.0)
                await client.publish(f"{self.base}/availability", "offline", qos=1,
                                     retain=True, timeout=2)
        for t in list(self._tasks):
            t.cancel()
        self.state = "stopped"

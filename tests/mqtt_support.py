"""A real Mosquitto broker on 127.0.0.1 and a recording MQTT subscriber, for the MQTT tests.

The broker's port is chosen by the OS (bind 0, read, release; the broker binds it a moment
later and the start is retried on the rare clash). The subscriber is paho-mqtt (what
aiomqtt runs on) in its own network thread, keeping every message it receives.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho

from tests.conftest import async_wait_until, wait_until

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    """A TCP port the OS just handed out on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    """``mosquitto -c <conf>`` listening on 127.0.0.1 only (anonymous, persistence off:
    retained messages live as long as the broker process)."""

    def __init__(self, directory: Path, port: int | None = None):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        conf = self.directory / "mosquitto.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                        "persistence false\n")
        log = open(self.directory / "mosquitto.log", "ab")  # noqa: SIM115 - kept by Popen
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=log,
                                     stderr=subprocess.STDOUT)
        log.close()

        def up() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.log()
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0

        wait_until(up, 20, 0.02, "mosquitto listening")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def log(self) -> str:
        p = self.directory / "mosquitto.log"
        return p.read_text(errors="replace")[-3000:] if p.exists() else ""

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"


class Subscriber:
    """A paho client subscribed to ``topics``; :attr:`messages` is ``[(topic, payload
    str, retain flag, monotonic arrival)]``."""

    def __init__(self, port: int, *topics: str):
        self.messages: list[tuple[str, str, bool, float]] = []
        self._lock = threading.Lock()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2)
        self.client.on_message = self._on_message
        self._topics = topics
        self.client.on_connect = self._on_connect
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_connect(self, client: paho.Client, *_: Any) -> None:
        for t in self._topics:
            client.subscribe(t, qos=1)

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, msg.payload.decode(), bool(msg.retain),
                                  time.monotonic()))

    def on(self, topic: str) -> list[str]:
        """Payloads received on ``topic``, in order."""
        with self._lock:
            return [p for t, p, _, _ in self.messages if t == topic]

    def events(self, base: str) -> list[dict[str, Any]]:
        """Decoded ``<base>/events`` messages."""
        return [json.loads(p) for p in self.on(f"{base}/events")]

    def wait(self, topic: str, predicate: Any = None, timeout: float = 30.0) -> str:
        """The first payload on ``topic`` satisfying ``predicate`` (any, if None)."""
        def found() -> str | None:
            for p in self.on(topic):
                if predicate is None or predicate(p):
                    return p
            return None
        return wait_until(found, timeout, 0.02,
                          lambda: f"{topic}: {self.on(topic)[-5:]} of {len(self.messages)}")

    async def until(self, topic: str, predicate: Any = None, timeout: float = 30.0) -> str:
        """:meth:`wait` for asyncio tests (the event loop keeps running)."""
        def found() -> str | None:
            for p in self.on(topic):
                if predicate is None or predicate(p):
                    return p
            return None
        return await async_wait_until(
            found, timeout, 0.02,
            lambda: f"{topic}: {self.on(topic)[-5:]} of {len(self.messages)}")

    def publish(self, topic: str, payload: str, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

"""Configuration: one TOML file, typed pydantic models that reject unknown keys.

The shipped ``config/climbd.toml`` sets every key to its built-in default with a comment
(``tests/test_config.py`` proves it loads to exactly ``Config()``). Every validation error is
reported with its dotted key path and the offending value, e.g.
``capture.fps: Input should be greater than 0 (got -3)``.

Precedence for the values the daemon runs with: command line > config file > built-in
defaults. The state directory comes from ``--state-dir``, else ``$STATE_DIRECTORY`` (set by
systemd's ``StateDirectory=``), else ``$XDG_STATE_HOME/climbd`` (``~/.local/state/climbd``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from climbd.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "ArchiveConfig",
    "AttemptsConfig",
    "ButtonConfig",
    "CaptureConfig",
    "Config",
    "ExportConfig",
    "GpioConfig",
    "LedConfig",
    "LiveConfig",
    "MqttConfig",
    "PoseConfig",
    "RecordingConfig",
    "RetentionConfig",
    "SecurityConfig",
    "ServerConfig",
    "ShareConfig",
    "StorageConfig",
    "VideoConfig",
    "WebRTCConfig",
    "config_file_keys",
    "config_report",
    "config_sources",
    "load_config",
    "parse_config",
    "resolve_state_dir",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class CaptureConfig(_Section):
    """Where frames come from and how a lost source is retried."""

    source: str = Field(
        "/dev/video0",
        description="V4L2 device path or index ('0'), video file path, or rtsp://, http(s):// URL",
    )
    loop: bool = Field(False, description="Loop a video file source forever")
    width: int = Field(1280, gt=0, description="Requested camera width in pixels (V4L2 only)")
    height: int = Field(720, gt=0, description="Requested camera height in pixels (V4L2 only)")
    fps: float = Field(30.0, gt=0, le=240, description="Requested camera frame rate (V4L2 only)")
    input_format: str = Field(
        "", description="V4L2 pixel format to ask for, e.g. 'mjpeg' or 'yuyv422'; '' = driver's"
    )
    stall_timeout_s: float = Field(
        5.0, gt=0, description="Seconds without data from a camera or stream before it counts "
        "as lost (then it is reopened); also the read timeout of network streams"
    )
    open_timeout_s: float = Field(
        10.0, gt=0, le=300, description="Seconds a connection attempt to a camera or stream "
        "may take before it fails (and is retried)"
    )
    rtsp_transport: Literal["tcp", "udp", "udp_multicast", "http", "https"] = Field(
        "tcp", description="How RTSP carries the video (FFmpeg rtsp_transport): 'tcp' "
        "(interleaved, survives Wi-Fi loss and NAT) or 'udp' (lower latency on a clean LAN)"
    )
    options: dict[str, str] = Field(
        default_factory=dict, description="Extra FFmpeg input options for the source, as "
        "strings (they win over climbd's own), e.g. {'buffer_size' = '4194304'}"
    )
    retry_initial_s: float = Field(1.0, gt=0, description="First reconnect delay in seconds")
    retry_max_s: float = Field(30.0, gt=0, description="Longest reconnect delay in seconds")


class PoseConfig(_Section):
    """MediaPipe BlazePose settings (tracking mode; see :mod:`climbd.pose` for the backends)."""

    enabled: bool = True
    model_complexity: Literal[1] = Field(
        1, description="1 = BlazePose GHUM Full, the only model shipped in mediapipe 0.10.18"
    )
    backend: Literal["auto", "solutions", "tasks"] = Field(
        "auto", description="'solutions' = mp.solutions.pose of mediapipe 0.10.18 (Python <= "
        "3.12); 'tasks' = the Tasks API PoseLandmarker of mediapipe >= 0.10 with the "
        "climbd-blazepose-full bundle (any Python, the one on 3.13); 'auto' = solutions when "
        "installed, else tasks",
    )
    min_detection_confidence: float = Field(0.5, ge=0, le=1)
    min_tracking_confidence: float = Field(0.5, ge=0, le=1)
    smooth_landmarks: bool = True
    workers: int | Literal["auto"] = Field(
        "auto", description="Pose estimators running in parallel on the live stream; 'auto' "
        "= one per CPU up to two CPUs, then CPUs - 1, at most 4 (climbd.device.auto_workers; "
        "2 on the 2-core reference machine, 3 on a Pi 4/5). BlazePose Full takes ~37 ms per "
        "frame on one core of the reference machine, so one worker covers ~93 % of a 25 fps "
        "camera; two cover all of it. Each worker tracks on its own, so landmarks alternate "
        "between trackers (sub-pixel to ~1 px jitter); frames live pose skips are filled in "
        "after the recording (pose backfill)",
    )

    @field_validator("workers")
    @classmethod
    def _workers_range(cls, v: int | str) -> int | str:
        if v != "auto" and not 1 <= int(v) <= 8:
            raise ValueError("pose.workers must be 1..8 or 'auto'")
        return v


class VideoConfig(_Section):
    """The single H.264 encode that feeds the recorder and every live viewer."""

    encoder: str = Field(
        "libx264", description="FFmpeg encoder name (e.g. 'h264_v4l2m2m'); 'copy' = record and "
        "stream the camera's own H.264 (passthrough, no encode); 'auto' = 'copy' for a camera "
        "or stream that sends H.264 a browser can play, else the first hardware H.264 "
        "encoder that works here (probed once: h264_v4l2m2m on a Pi 4, ...; "
        "climbd.device.auto_encoder), else libx264"
    )
    preset: str = Field("veryfast", description="Encoder preset ('' to leave unset)")
    bitrate_kbps: int = Field(2500, gt=0, le=100_000)
    keyframe_interval_s: float = Field(1.0, gt=0, le=10, description="GOP length in seconds")
    options: dict[str, str] = Field(
        default_factory=dict, description="Extra FFmpeg encoder options (strings)"
    )


class RecordingConfig(_Section):
    """Sessions: pre-roll, the in-memory buffer, commit cadence, limits."""

    @property
    def buffer_keep_s(self) -> float:
        """Seconds the buffer really keeps: ``buffer_s``, or ``pre_roll_s`` if longer."""
        return max(self.buffer_s, self.pre_roll_s)

    pre_roll_s: float = Field(
        10.0, ge=0, le=600, description="Seconds before the trigger a recording (and the "
        "save-last button) includes by default (the buffer keeps at least this much)"
    )
    buffer_s: float = Field(
        30.0, ge=1, le=600, description="Seconds of encoded video and pose kept in memory (whole "
        "GOPs; at least pre_roll_s): the most pre-roll, save-last and delayed live view "
        "(live.delay_s) can reach back. Costs about video.bitrate_kbps * 125 bytes per "
        "second (2500 kbit/s: ~312 KB/s, ~9.4 MB for 30 s) plus one GOP and ~40 KB/s of "
        "pose at 30 fps"
    )
    commit_interval_s: float = Field(
        1.0, gt=0, le=1.0, description="Pose rows are committed to SQLite at least this often"
    )
    max_duration_s: float = Field(
        1800.0, gt=0, description="A recording stops by itself after this many seconds"
    )


class LiveConfig(_Section):
    """The live page's delayed view ("N s ago", ``POST /api/whep/delayed``)."""

    delay_s: float = Field(
        10.0, ge=1, le=600, description="Default delay of the delayed live view, seconds (a "
        "viewer may ask for 1..recording.buffer_s; a default beyond the buffer is cut to it)"
    )


class AttemptsConfig(_Section):
    """Attempts found from pose; hands-free recording of each attempt."""

    auto_record: bool = Field(
        False, description="Record every attempt as its own session, no button needed"
    )
    pre_s: float = Field(
        3.0, ge=0, le=60,
        description="Seconds recorded before lift-off (needs recording.pre_roll_s >= pre_s + 2)",
    )
    post_s: float = Field(2.0, ge=0, le=60, description="Seconds recorded after landing")
    cooldown_s: float = Field(
        5.0, ge=0, le=3600, description="No new hands-free recording this soon after the last"
    )
    max_s: float = Field(
        600.0, gt=0, le=7200, description="A hands-free recording stops after this many seconds"
    )


class ServerConfig(_Section):
    """The HTTP server the tablets talk to."""

    host: str = "0.0.0.0"
    port: int = Field(8080, ge=0, le=65535)
    tls_cert: str = Field(
        "", description="PEM certificate (chain) file: serve HTTPS instead of HTTP; '' = plain "
        "HTTP. Needs tls_key"
    )
    tls_key: str = Field("", description="PEM private key file of tls_cert")


class WebRTCConfig(_Section):
    """Live view over WebRTC (WHEP): ICE servers, host candidates, viewer limits."""

    ice_servers: list[str] = Field(
        default_factory=list,
        description="STUN/TURN URLs (RFC 7064/7065), e.g. 'stun:192.168.1.2:3478'; empty = none "
        "(the appliance is offline; aiortc would otherwise use a public Google STUN server)",
    )
    host_candidates: list[str] = Field(
        default_factory=list,
        description="Only offer ICE host candidates on these local IP addresses (e.g. "
        "['192.168.1.20'] or ['127.0.0.1']); empty = every interface but 127.0.0.1",
    )
    max_viewers: int = Field(8, ge=0, le=256, description="Concurrent WebRTC viewers")
    max_websockets: int = Field(
        32, ge=0, le=1024, description="Concurrent /api/live WebSocket clients"
    )
    ice_timeout_s: float = Field(
        15.0, gt=0, le=300,
        description="Seconds a new viewer may take to connect (ICE + DTLS) before it is dropped",
    )

    @field_validator("ice_servers")
    @classmethod
    def _check_ice_urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if url.split(":", 1)[0].lower() not in ("stun", "stuns", "turn", "turns"):
                raise ValueError(f"{url!r} is not a stun:, stuns:, turn: or turns: URL")
        return urls

    @field_validator("host_candidates")
    @classmethod
    def _check_addresses(cls, addresses: list[str]) -> list[str]:
        import ipaddress

        for address in addresses:
            ipaddress.ip_address(address)  # ValueError names the bad address
        return addresses


class StorageConfig(_Section):
    """The state directory's contents."""

    reserve_mb: float = Field(
        4.0,
        ge=0,
        description="Size of a ballast file freed when the disk fills, so a failed recording "
        "can still be closed cleanly",
    )


GpioAction = Literal["none", "toggle_recording", "start_recording", "stop_recording", "save_last"]


class ButtonConfig(_Section):
    """One push button on a GPIO input line, read through libgpiod v2 (``climbd.hardware``)."""

    line: str | int = Field(
        description="Line name as the chip reports it (e.g. 'GPIO17' on a Raspberry Pi, see "
        "`gpioinfo`) or the line's offset on the chip"
    )
    label: str = Field("", description="Name used in logs and health; '' = the line")
    short_press: GpioAction = Field(
        "toggle_recording", description="Action when the button is released before long_press_s"
    )
    long_press: GpioAction = Field(
        "save_last",
        description="Action fired as soon as the button has been held for long_press_s",
    )
    save_last_s: float | None = Field(
        None, gt=0, le=600, description="Seconds kept by 'save_last'; unset = recording.pre_roll_s"
    )
    active_low: bool = Field(
        True, description="True for a button that connects the line to ground when pressed"
    )
    bias: Literal["pull_up", "pull_down", "disabled", "as_is"] = Field(
        "pull_up", description="Line bias; 'pull_up' suits a button wired to ground"
    )


class LedConfig(_Section):
    """An output line driving an LED that is lit while a recording runs."""

    line: str | int = Field(
        "", description="Line name (e.g. 'GPIO27') or offset on the chip; '' = no LED"
    )
    active_low: bool = Field(False, description="True if the LED lights when the line is low")


class GpioConfig(_Section):
    """Physical buttons and the recording LED (libgpiod v2 character device)."""

    enabled: bool = Field(False, description="Read buttons and drive the LED")
    chip: str = Field(
        "/dev/gpiochip0",
        description="GPIO character device, or '' to search every /dev/gpiochip* for the lines",
    )
    debounce_ms: float = Field(
        30.0, ge=0, le=1000, description="Edges closer than this to the last accepted edge are "
        "contact bounce (milliseconds)"
    )
    long_press_s: float = Field(
        1.5, gt=0, le=30, description="Hold time in seconds that turns a press into a long press"
    )
    buttons: list[ButtonConfig] = Field(default_factory=list, description="The push buttons")
    led: LedConfig = Field(default_factory=LedConfig, description="Recording LED")


class RetentionConfig(_Section):
    """Automatic deletion of old sessions and the free-space guard (``climbd.retention``)."""

    max_age_days: float = Field(
        30.0, ge=0, description="Delete sessions older than this many days (pinned ones are "
        "kept); 0 = never delete by age"
    )
    headroom_s: float = Field(
        3600.0, ge=0, description="Keep room for this many seconds of recording at "
        "video.bitrate_kbps: below it the oldest unpinned sessions are deleted; 0 = off"
    )
    floor_mb: float = Field(
        200.0, ge=0, description="Refuse to start a recording with less than this many MiB "
        "free (HTTP 507); 0 = off"
    )
    interval_s: float = Field(60.0, gt=0, le=86400, description="Seconds between sweeps")


class ShareConfig(_Section):
    """Short-lived links (QR codes) that hand one export to a phone."""

    ttl_s: float = Field(
        86400.0, gt=0, le=30 * 86400, description="Seconds a share link stays valid"
    )
    base_url: str = Field(
        "", description="scheme://host[:port] put in links, e.g. 'http://192.168.1.20:8080'; "
        "'' = the request's Host unless it is a loopback name, else this machine's LAN "
        "address (default-route interface) or <hostname>.local"
    )

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, url: str) -> str:
        if url and not url.startswith(("http://", "https://")):
            raise ValueError(f"{url!r} must start with http:// or https://")
        return url.rstrip("/")


class ExportConfig(_Section):
    """Background exports (clips, burned-in skeleton, pose data)."""

    nice: int = Field(
        19, ge=0, le=19, description="Nice value of the export worker process (19 = lowest)"
    )
    idle_priority: bool = Field(
        True, description="Also run the worker under SCHED_IDLE: it only gets CPU time that "
        "capture, encode and pose leave unused"
    )
    max_concurrent: int = Field(1, ge=1, le=4, description="Exports running at once")
    max_queued: int = Field(
        8, ge=0, le=100, description="Exports waiting for a slot; more are refused (HTTP 429)"
    )
    preset: str = Field("veryfast", description="libx264 preset of burned-in exports")
    crf: int = Field(20, ge=0, le=51, description="libx264 quality of burned-in exports")


class MqttConfig(_Section):
    """MQTT events, commands and Home Assistant discovery (``climbd.mqtt``)."""

    enabled: bool = Field(False, description="Connect to an MQTT broker")
    url: str = Field(
        "mqtt://localhost:1883", description="Broker: mqtt://host[:port] (1883) or "
        "mqtts://host[:port] (TLS, 8883, the system's CA certificates)"
    )
    username: str = Field("", description="Broker user name; '' = anonymous")
    password_file: str = Field(
        "", description="File holding the broker password (readable by the service user)"
    )
    topic_prefix: str = Field("climbd", description="Topics are <topic_prefix>/<device_id>/...")
    device_id: str = Field("", description="This box's id in topics and discovery; '' = the "
                           "host name")
    discovery: bool = Field(True, description="Publish Home Assistant discovery documents")
    discovery_prefix: str = Field("homeassistant", description="Home Assistant's discovery "
                                  "prefix (it announces itself on <prefix>/status)")
    stats_interval_s: float = Field(30.0, gt=0, le=3600,
                                    description="Seconds between stats messages")
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keep-alive (s): the broker "
                             "sends the last will this long after the box vanishes (x1.5)")
    queue_max: int = Field(1000, ge=10, le=100_000, description="Messages kept while the "
                           "broker is away; beyond it the oldest are dropped (counted in health)")
    retry_initial_s: float = Field(1.0, gt=0, le=60, description="First reconnect delay (s)")
    retry_max_s: float = Field(30.0, gt=0, le=3600, description="Longest reconnect delay (s)")

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        if not url.startswith(("mqtt://", "mqtts://")):
            raise ValueError(f"{url!r} must start with mqtt:// or mqtts://")
        return url

    @field_validator("topic_prefix", "device_id", "discovery_prefix")
    @classmethod
    def _check_topic_part(cls, part: str) -> str:
        if any(c in part for c in "+#\0") or part.startswith("/") or part.endswith("/"):
            raise ValueError(f"{part!r} must not contain + # or NUL nor start/end with /")
        return part


class ArchiveConfig(_Section):
    """Copies of completed sessions in an S3-compatible bucket (``climbd.archive``)."""

    enabled: bool = Field(False, description="Upload every completed session")
    endpoint_url: str = Field("", description="S3 endpoint, e.g. 'http://minio.lan:9000'; "
                              "'' = AWS")
    bucket: str = Field("", description="Bucket name (must exist)")
    prefix: str = Field("", description="Key prefix: <prefix>/<session uuid>/...; '' = the "
                        "device id (mqtt.device_id, else the host name)")
    region: str = Field("us-east-1", description="Region name (most servers accept any)")
    access_key_id: str = Field("", description="Access key id; '' = boto3's usual lookup")
    secret_access_key: str = Field("", description="Secret key (prefer secret_access_key_file)")
    secret_access_key_file: str = Field(
        "", description="File holding the secret key, readable by the service user only"
    )
    delete_local_after_days: float = Field(
        0.0, ge=0, description="Delete local copies of archived sessions this many days "
        "after recording (pinned ones kept); 0 = keep"
    )
    part_size_mb: int = Field(8, ge=5, le=512, description="Multipart part size in MiB "
                              "(memory used by an upload is about one part)")
    retry_initial_s: float = Field(5.0, gt=0, le=3600, description="First retry delay (s)")
    retry_max_s: float = Field(300.0, gt=0, le=86400, description="Longest retry delay (s)")
    nice: int = Field(19, ge=0, le=19, description="Nice value of the upload thread")


class SecurityConfig(_Section):
    """Access control and abuse limits (``climbd.security``; see THREAT_MODEL.md)."""

    loopback_is_trusted: bool = Field(
        False, description="Opt-in, off by default and NOT safe behind a reverse proxy on "
        "this machine or with other local users: a request from 127.0.0.0/8 or ::1 to a "
        "loopback name, not sent by another web origin, counts as the admin. Use the local "
        "admin socket (`climbd token create`, `climbd pair`) instead"
    )
    trusted_proxies: list[str] = Field(
        default_factory=list, description="Addresses (or CIDR networks) of reverse proxies "
        "in front of the daemon. Only a connection from one of them may say who the client "
        "is (X-Forwarded-For, its right-most untrusted entry); without this the header is "
        "ignored. A proxy is never trusted for anything else"
    )
    allowed_hosts: list[str] = Field(
        default_factory=lambda: ["$ip", "localhost", "$hostname", "*.local"],
        description="Host header names served (DNS rebinding defence): '$ip' = any IP "
        "literal, '$hostname' = this machine's name, '*.suffix' or an exact name",
    )
    pairing_code_ttl_s: float = Field(
        600.0, gt=0, le=86400, description="Seconds a pairing code stays valid"
    )
    admin_idle_timeout_s: float = Field(
        1800.0, gt=0, description="An admin session unused this many seconds ends"
    )
    admin_session_max_s: float = Field(
        28800.0, gt=0, description="An admin session ends this many seconds after login"
    )
    device_cookie_max_age_s: float = Field(
        34_560_000.0, gt=0, le=34_560_000,
        description="Lifetime of a paired device's cookie in seconds (400 days, the most "
        "browsers keep)",
    )
    auth_attempts_per_min: float = Field(
        5.0, gt=0, description="Pairing/login attempts per client per minute (also the burst)"
    )
    auth_attempts_global_per_min: float = Field(
        10.0, gt=0, description="Pairing-code guesses per minute from all clients together "
        "(codes from screens and the journal)"
    )
    login_attempts_global_per_min: float = Field(
        10.0, gt=0, description="Admin password attempts per minute from all anonymous "
        "clients together (a paired device has its own budget); separate from pairing"
    )
    api_requests_per_s: float = Field(
        50.0, gt=0, description="HTTP requests per second per client (sustained)"
    )
    api_burst: int = Field(200, ge=1, description="HTTP requests per client back to back")
    signalling_per_min: float = Field(
        30.0, gt=0, description="New live connections (POST /api/whep, /api/live) per client "
        "per minute"
    )
    signalling_burst: int = Field(6, ge=1, description="New live connections back to back")
    messages_per_s: float = Field(
        20.0, gt=0, description="WebSocket / data-channel messages per second per connection"
    )
    messages_burst: int = Field(40, ge=1, description="Messages per connection back to back")
    max_connections_per_client: int = Field(
        64, ge=1, description="Open TCP connections per client address; more are closed"
    )
    max_connections: int = Field(
        0, ge=0, description="Open TCP connections of all clients together; 0 = the fd "
        "limit (LimitNOFILE) minus a reserve for recording, SQLite and the live view. Never "
        "more than that"
    )
    max_viewers_per_device: int = Field(
        4, ge=1, description="Live viewers (WHEP peers) one device or token may hold"
    )
    max_websockets_per_device: int = Field(
        4, ge=1, description="Open /api/live WebSockets one device or token may hold"
    )
    header_timeout_s: float = Field(
        15.0, gt=0, le=3600, description="Seconds a connection may take to send a complete "
        "request head (also the keep-alive idle timeout)"
    )

    @field_validator("allowed_hosts")
    @classmethod
    def _check_hosts(cls, patterns: list[str]) -> list[str]:
        import re

        for p in patterns:
            if p in ("$ip", "$hostname"):
                continue
            name = p[2:] if p.startswith("*.") else p
            if not re.fullmatch(r"[A-Za-z0-9_.:\[\]-]+", name) or not name.strip("."):
                raise ValueError(f"{p!r} is not '$ip', '$hostname', a host name or '*.suffix'")
        return patterns


class Config(_Section):
    """The whole configuration file. Every section is optional."""

    capture: CaptureConfig = Field(default_factory=CaptureConfig)
    pose: PoseConfig = Field(default_factory=PoseConfig)
    video: VideoConfig = Field(default_factory=VideoConfig)
    recording: RecordingConfig = Field(default_factory=RecordingConfig)
    live: LiveConfig = Field(default_factory=LiveConfig)
    attempts: AttemptsConfig = Field(default_factory=AttemptsConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    gpio: GpioConfig = Field(default_factory=GpioConfig)
    webrtc: WebRTCConfig = Field(default_factory=WebRTCConfig)
    security: SecurityConfig = Field(default_factory=SecurityConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    share: ShareConfig = Field(default_factory=ShareConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    archive: ArchiveConfig = Field(default_factory=ArchiveConfig)
    log_level: Literal["debug", "info", "warning", "error"] = "info"


def _problems(exc: ValidationError, data: dict[str, Any]) -> list[tuple[str, str, object]]:
    out = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        out.append((path, msg, err.get("input")))
    return out


def parse_config(data: dict[str, Any], origin: str = "<config>") -> Config:
    """Validate a parsed TOML mapping into a :class:`Config`.

    Raises:
        ConfigError: with one ``(key_path, message, value)`` problem per bad key.
    """
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid configuration in {origin}", _problems(exc, data)) from None


def load_config(path: str | os.PathLike[str] | None) -> Config:
    """Read and validate a TOML config file; ``None`` gives the built-in defaults.

    Raises:
        ConfigError: the file is missing, not TOML, or has bad or unknown keys.
    """
    if path is None:
        return Config()
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p} is not valid TOML: {exc}") from None
    return parse_config(data, str(p))


def salvage_config(path: str | os.PathLike[str]) -> tuple[Config, list[str]]:
    """The safe-mode configuration of a file that failed :func:`load_config`: every section
    that is valid on its own is kept as written, an invalid one falls back to its defaults
    (listed in the returned problems), and ``retention.max_age_days`` is 0 (never delete by
    age) unless the ``[retention]`` section itself is valid.

    Raises:
        ConfigError: the file asked for TLS (``server.tls_cert``/``tls_key``) but its
            ``[server]`` section is invalid: the daemon must not come up on plain HTTP
            then. Also when the file cannot be read at all and is not TOML while it
            mentions TLS.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        return Config(retention=RetentionConfig(max_age_days=0)), [
            f"cannot read {p}: {exc.strerror or exc}"]
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        if "tls_cert" in text or "tls_key" in text:
            raise ConfigError(f"{p} is not valid TOML and asks for TLS: refusing to serve "
                              f"plain HTTP ({exc})") from None
        return Config(retention=RetentionConfig(max_age_days=0)), [f"not valid TOML: {exc}"]
    kept: dict[str, Any] = {}
    problems: list[str] = []
    fields = Config.model_fields
    for key, value in data.items():
        if key not in fields:
            problems.append(f"unknown section or key {key!r} ignored")
            continue
        try:
            Config.model_validate({key: value})
        except ValidationError as exc:
            where = "; ".join(f"{key}.{p_}: {m}" for p_, m, _ in _problems(exc, data))
            problems.append(f"[{key}] uses its defaults ({where})")
            if key == "server" and isinstance(value, dict) and (
                    value.get("tls_cert") or value.get("tls_key")):
                raise ConfigError(f"{p}: [server] asks for TLS but is invalid ({where}): "
                                  "refusing to serve plain HTTP") from None
            continue
        kept[key] = value
    if "retention" not in kept:
        kept["retention"] = {"max_age_days": 0}
    return Config.model_validate(kept), problems


def with_overrides(config: Config, overrides: dict[str, Any]) -> Config:
    """Return a copy of ``config`` with dotted-key overrides applied and re-validated.

    ``overrides`` maps ``"capture.source"``-style keys to values; ``None`` values are ignored
    (an option not given on the command line).

    Raises:
        ConfigError: an override has a bad value.
    """
    data = config.model_dump()
    for key, value in overrides.items():
        if value is None:
            continue
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return parse_config(data, "command line")


ConfigSource = Literal["default", "file", "cli"]


def _leaves(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted leaf keys of a nested mapping (lists and tables-in-lists are leaves)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and path != "video.options":
            out.update(_leaves(value, path + "."))
        else:
            out[path] = value
    return out


def config_file_keys(path: str | os.PathLike[str] | None) -> set[str]:
    """The dotted keys a config file sets (empty when there is no file or it is unreadable)."""
    if path is None:
        return set()
    try:
        return set(_leaves(tomllib.loads(Path(path).read_text(encoding="utf-8"))))
    except (OSError, ValueError):  # TOMLDecodeError is a ValueError
        return set()


def config_sources(file_keys: set[str], overrides: dict[str, Any]) -> dict[str, ConfigSource]:
    """Where each non-default key came from: ``"cli"`` (an override that was given) wins over
    ``"file"``. Keys not listed are built-in defaults."""
    sources: dict[str, ConfigSource] = dict.fromkeys(file_keys, "file")
    sources.update({k: "cli" for k, v in overrides.items() if v is not None})
    return sources


def config_report(config: Config, sources: Mapping[str, str] | None = None
                  ) -> list[dict[str, Any]]:
    """The configuration in force as ``[{"key", "value", "source"}]``, sorted by key.

    Args:
        config: the configuration the daemon runs with.
        sources: :func:`config_sources` (None: everything counts as a default).
    """
    known = sources or {}
    return [{"key": key, "value": value, "source": known.get(key, "default")}
            for key, value in sorted(_leaves(config.model_dump(mode="json")).items())]


def resolve_state_dir(cli_value: str | os.PathLike[str] | None = None) -> Path:
    """Pick the state directory: ``--state-dir``, else ``$STATE_DIRECTORY``, else per-user.

    systemd may pass several colon-separated paths in ``$STATE_DIRECTORY``; the first is used.
    The directory is not created here.
    """
    if cli_value:
        return Path(cli_value).expanduser()
    env = os.environ.get("STATE_DIRECTORY")
    if env:
        return Path(env.split(":")[0])
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "climbd"

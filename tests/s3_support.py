"""A real S3 server on 127.0.0.1 for the archive tests: ``moto_server`` (moto[server], real
S3 HTTP) as a separate process, started and stopped by the test. Its state lives in memory:
after a restart the bucket is made again (a MinIO/Garage keeps it on disk)."""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config as BotoConfig

from tests.conftest import wait_until

MOTO = shutil.which("moto_server") or str(Path(sys.executable).with_name("moto_server"))
BUCKET = "climbs"
KEYS = {"access_key_id": "testing", "secret_access_key": "testing-secret"}


def free_port() -> int:
    """A TCP port the OS just handed out on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class S3Server:
    """``moto_server -H 127.0.0.1 -p <port>`` with the test bucket."""

    def __init__(self, directory: Path):
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, bucket: bool = True) -> None:
        log = open(self.directory / "moto.log", "ab")  # noqa: SIM115 - kept by Popen
        self.proc = subprocess.Popen([MOTO, "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=log, stderr=subprocess.STDOUT)
        log.close()

        def up() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.log()
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0

        wait_until(up, 60, 0.05, "moto_server listening")
        if bucket:
            self.client().create_bucket(Bucket=BUCKET)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)
        self.proc = None

    def log(self) -> str:
        p = self.directory / "moto.log"
        return p.read_text(errors="replace")[-3000:] if p.exists() else ""

    def client(self) -> Any:
        return boto3.session.Session().client(
            "s3", endpoint_url=self.url, region_name="us-east-1",
            aws_access_key_id=KEYS["access_key_id"],
            aws_secret_access_key=KEYS["secret_access_key"],
            config=BotoConfig(s3={"addressing_style": "path"}))

    def section(self, **kw: Any) -> dict[str, Any]:
        """The ``[archive]`` config for this server."""
        return {"archive": {"enabled": True, "endpoint_url": self.url, "bucket": BUCKET,
                            "prefix": "wall1", "retry_initial_s": 0.3, "retry_max_s": 1.0,
                            "nice": 10, **KEYS, **kw}}

    def keys(self) -> list[str]:
        out = self.client().list_objects_v2(Bucket=BUCKET)
        return sorted(o["Key"] for o in out.get("Contents", []))

    def get(self, key: str) -> bytes:
        return bytes(self.client().get_object(Bucket=BUCKET, Key=key)["Body"].read())

    def sha256(self, key: str) -> str:
        h = hashlib.sha256()
        body = self.client().get_object(Bucket=BUCKET, Key=key)["Body"]
        for chunk in iter(lambda: body.read(1 << 20), b""):
            h.update(chunk)
        return h.hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()

"""Issue 14, finding 8: safe mode keeps what it can of the owner's file and never deletes.

The review's case: ``[retention] max_age_days = 0`` (keep forever) and a typo elsewhere. The
old safe mode ran on *all* defaults (30 days) and deleted every unpinned session older than
that within a minute; an HTTPS box came up on plain HTTP. ``climbd run`` is a real
subprocess here, on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from climbd.config import salvage_config
from climbd.errors import ConfigError
from climbd.storage import Database
from climbd.visibility import SYSTEM, viewing
from tests.conftest import REPO, STEEPWALL, DaemonProcess
from tests.test_security_http import _self_signed

pytestmark = pytest.mark.integration

DAY = 86400.0


async def _old_sessions(state: Path, n: int = 3) -> list[int]:
    """``n`` unpinned sessions created 60 days ago."""
    state.mkdir(parents=True, exist_ok=True)
    db = await Database.open(state / "climbd.db")
    ids = []
    try:
        with viewing(SYSTEM):
            for i in range(n):
                rec = await db.create_session(name=f"old {i}", width=64, height=64, fps=30.0)
                await db.finish_session(rec.id, status="completed")
                ids.append(rec.id)
            async with db.transaction("age the sessions") as conn:
                await conn.execute("UPDATE sessions SET created_at = ?", (time.time() - 60 * DAY,))
    finally:
        await db.close()
    return ids


async def _count(state: Path) -> int:
    db = await Database.open(state / "climbd.db")
    try:
        with viewing(SYSTEM):
            items, _total = await db.list_sessions(limit=100)
            return len(items)
    finally:
        await db.close()


def _get_json(url: str, ctx: ssl.SSLContext) -> object:
    with urllib.request.urlopen(url, context=ctx, timeout=2) as r:
        return json.loads(r.read())


def test_salvage_keeps_valid_sections_and_refuses_plain_http_for_a_broken_tls_server(
        tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[retention]\nmax_age_days = 0\n[capture]\nframerate = 30\n"
                   "[security]\napi_burst = 7\n[server]\nport = 8443\n")
    config, problems = salvage_config(cfg)
    assert config.retention.max_age_days == 0 and config.security.api_burst == 7
    assert config.server.port == 8443
    assert any("[capture]" in p for p in problems)
    cfg.write_text("[retention]\nmax_age_days = 'x'\n[capture]\nframerate = 30\n")
    config, _ = salvage_config(cfg)
    assert config.retention.max_age_days == 0  # its own section is invalid: never by age
    cfg.write_text("[server]\ntls_cert = '/c.pem'\ntls_key = '/k.pem'\nprot = 1\n")
    with pytest.raises(ConfigError, match="plain HTTP"):
        salvage_config(cfg)


async def test_safe_mode_keeps_every_session_and_keeps_tls(tmp_path: Path,
                                                           media: Path) -> None:
    state = tmp_path / "state"
    ids = await _old_sessions(state)
    cert, key = _self_signed(tmp_path)
    cfg = tmp_path / "climbd.toml"
    cfg.write_text(
        "[retention]\nmax_age_days = 0\ninterval_s = 1\n"
        "[capture]\nframerate = 30\n"  # the typo: unknown key -> safe mode
        f"[server]\ntls_cert = {json.dumps(str(cert))}\ntls_key = {json.dumps(str(key))}\n")
    d = DaemonProcess(state, STEEPWALL, "--config", str(cfg))
    try:
        ctx = ssl.create_default_context(cafile=str(cert))
        base = f"https://127.0.0.1:{d.port}"
        deadline = time.monotonic() + 60
        health = None
        while time.monotonic() < deadline:
            try:
                health = await asyncio.to_thread(_get_json, base + "/api/health", ctx)
                break
            except OSError:
                await asyncio.sleep(0.2)
        assert health is not None, d.log()
        assert health["status"] == "degraded"  # anonymous: general words only
        assert "listening on https://" in d.log()
        # poll through three retention intervals of the file (interval_s = 1): none go
        until = time.monotonic() + 3.0
        while time.monotonic() < until:
            assert await _count(state) == len(ids), d.log()
            await asyncio.sleep(0.25)
    finally:
        d.stop()
    assert "safe mode" in d.log_path.read_text(errors="replace").lower()


def test_safe_mode_refuses_to_serve_plain_http_when_tls_was_asked(tmp_path: Path) -> None:
    cfg = tmp_path / "climbd.toml"
    cfg.write_text("[server]\ntls_cert = '/nonexistent.pem'\ntls_key = '/k.pem'\nprot = 1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "climbd", "run", "--config", str(cfg), "--state-dir",
         str(tmp_path / "state"), "--host", "127.0.0.1", "--port", "0"],
        capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 2 and "plain HTTP" in proc.stderr, proc.stderr

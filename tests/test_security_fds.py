"""Issue 14, finding 2: a slow-head flood from many loopback addresses must not take the file
descriptors recording needs; EMFILE is not a full disk.

The daemon runs in this process with a soft ``RLIMIT_NOFILE`` lowered to what it holds plus
600 (the review's 1024 default, scaled down); the flood runs in a child process (its
sockets do not count against ours): 20 addresses (127.0.0.10-29) x 64 connections, each
sending half a request head and holding it. Bounded: 1280 connections, 60 s at most.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import sys
import time
from pathlib import Path

import pytest

from climbd.recording import describe_failure, is_disk_full
from climbd.security.transport import connection_cap, open_fds
from climbd.visibility import SYSTEM, viewing
from tests.securitykit import secure_daemon, wait_frames

pytestmark = pytest.mark.integration

FLOOD = r"""
import asyncio, resource, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
port = int(sys.argv[1])
held = []
async def one(addr):
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection(
            "127.0.0.1", port, local_addr=(addr, 0)), 5)
        w.write(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")  # never ends
        held.append(w)
    except (OSError, asyncio.TimeoutError):
        pass
async def main():
    await asyncio.gather(*(one(f"127.0.0.{10 + i // 64}") for i in range(20 * 64)))
    print(len(held), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until closed
asyncio.run(main())
"""


def test_emfile_is_not_a_full_disk() -> None:
    emfile = OSError(errno.EMFILE, "Too many open files")
    assert not is_disk_full(emfile)
    assert "not a full disk" in describe_failure(emfile)
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    wrapped = RuntimeError("writer failed")
    wrapped.__cause__ = emfile
    assert not is_disk_full(wrapped) and "file-descriptor limit" in describe_failure(wrapped)


def test_the_connection_cap_stays_below_the_fd_limit() -> None:
    assert connection_cap(0, soft_limit=1024, in_use=50) == 1024 - 50 - 256
    assert connection_cap(100, soft_limit=1024, in_use=50) == 100
    assert connection_cap(5000, soft_limit=1024, in_use=50) == 718
    assert connection_cap(0, soft_limit=100, in_use=90) == 16


async def test_a_slow_head_flood_leaves_recording_working(
        tmp_path: Path, media: Path, caplog: pytest.LogCaptureFixture) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = open_fds() + 600
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    flood = None
    try:
        async with secure_daemon(tmp_path, header_timeout_s=120) as (daemon, _base):
            await wait_frames(daemon)
            reserve = daemon.paths.reserve
            assert reserve.exists()
            caplog.clear()
            with caplog.at_level(logging.INFO):
                flood = await asyncio.create_subprocess_exec(
                    sys.executable, "-c", FLOOD, str(daemon.port),
                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
                assert flood.stdout is not None
                line = await asyncio.wait_for(flood.stdout.readline(), 60)
                assert int(line) > 0  # the child opened what it could
                await asyncio.sleep(0.5)  # let the daemon accept/refuse the last ones
                t0 = time.monotonic()
                with viewing(SYSTEM):  # a GPIO button: the box itself
                    rec = await daemon.recorder.start(name="during the flood")
                    await asyncio.sleep(1.5)
                    done = await daemon.recorder.stop()
                elapsed = time.monotonic() - t0
            assert done.id == rec.id and done.status == "completed", done
            assert done.frame_count > 10, done
            assert reserve.exists()  # never mistaken for a full disk
            lines = [r for r in caplog.records if r.name.startswith("climbd")]
            assert len(lines) < 60, len(lines)  # the journal does not fill up
            assert elapsed < 20
    finally:
        if flood is not None and flood.returncode is None:
            assert flood.stdin is not None
            flood.stdin.close()
            try:
                await asyncio.wait_for(flood.wait(), 10)
            except asyncio.TimeoutError:
                flood.kill()
                await flood.wait()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

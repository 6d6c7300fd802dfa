"""Credentials in camera URLs never leave the process: the one redaction function."""

from __future__ import annotations

import logging

import pytest

from climbd.redaction import RedactingFilter, redact_url

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("text", "expected"), [
    ("rtsp://admin:secret@192.168.1.30:554/stream1", "rtsp://***@192.168.1.30:554/stream1"),
    ("rtsp://admin:p@ss@cam.local/h264", "rtsp://***@cam.local/h264"),
    ("rtsp://user@cam/x", "rtsp://***@cam/x"),
    ("http://cam/video.cgi?user=admin&pwd=hunter2&res=hd",
     "http://cam/video.cgi?user=***&pwd=***&res=hd"),
    ("cannot open rtsp://u:pw@10.0.0.2/s: 401 Unauthorized",
     "cannot open rtsp://***@10.0.0.2/s: 401 Unauthorized"),
    ("/dev/video0", "/dev/video0"),
    ("rtsp://cam.local/stream", "rtsp://cam.local/stream"),
    ("clips/me@gym.mp4", "clips/me@gym.mp4"),
])
def test_redact_url(text: str, expected: str) -> None:
    assert redact_url(text) == expected


def test_log_filter_redacts_messages_arguments_and_tracebacks(caplog: pytest.LogCaptureFixture
                                                              ) -> None:
    logger = logging.getLogger("climbd.test.redaction")
    caplog.handler.addFilter(RedactingFilter())  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO, logger.name):
        logger.info("opening %s", "rtsp://u:topsecret@127.0.0.1/cam")
        try:
            raise OSError("failed: 'rtsp://u:topsecret@127.0.0.1/cam'")
        except OSError:
            logger.exception("capture")
    text = caplog.text
    assert "topsecret" not in text
    assert "rtsp://***@127.0.0.1/cam" in text
    assert "Traceback" in text

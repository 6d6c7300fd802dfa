"""A real RTSP camera for tests and benchmarks: GStreamer's gst-rtsp-server on loopback.

Run with the *system* Python (``/usr/bin/python3``: the venv cannot import ``gi``), from
Debian's ``gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-{good,bad,ugly}``:

    /usr/bin/python3 tests/rtsp_camera.py --port 0 --user u --password p

It serves a live H.264 stream (``videotestsrc`` → ``x264enc``, no B-frames, SPS/PPS before
every IDR like an IP camera) at ``rtsp://127.0.0.1:PORT/cam``, shared by every client (all
clients get the same packets, as from one camera), and prints one JSON line
``{"port": PORT, "url": ...}`` on stdout once it listens. It runs until killed.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=0, help="0 = any free port")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=360)
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--gop", type=int, default=30, help="frames between keyframes")
    p.add_argument("--profile", default="baseline", choices=["baseline", "main", "high"])
    p.add_argument("--bframes", type=int, default=0)
    p.add_argument("--preset", default="ultrafast",
                   help="x264 speed preset (ultrafast has no CABAC/8x8dct: Baseline whatever "
                   "--profile says; superfast gives real Main/High)")
    p.add_argument("--bitrate", type=int, default=1500, help="kbit/s")
    p.add_argument("--user", default="")
    p.add_argument("--password", default="")
    p.add_argument("--pattern", default="ball")
    args = p.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        f"( videotestsrc is-live=true pattern={args.pattern} "
        f"! video/x-raw,width={args.width},height={args.height},framerate={args.fps}/1 "
        f"! x264enc tune=zerolatency speed-preset={args.preset} "
        f"key-int-max={args.gop} bframes={args.bframes} bitrate={args.bitrate} "
        f"! video/x-h264,profile={args.profile} "
        f"! rtph264pay name=pay0 pt=96 config-interval=-1 )")
    factory.set_shared(True)
    if args.user:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", "camera-user")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password), token)
        server.set_auth(auth)
        permissions = Gst.Structure.new_from_string(
            "camera-user, media.factory.access=(boolean)true, "
            "media.factory.construct=(boolean)true")
        factory.add_role_from_structure(permissions)
    server.get_mount_points().add_factory("/cam", factory)
    if server.attach(None) == 0:
        print("cannot attach the RTSP server", file=sys.stderr)
        return 1
    port = server.get_bound_port()
    print(json.dumps({"port": port, "url": f"rtsp://127.0.0.1:{port}/cam"}), flush=True)
    loop = GLib.MainLoop()
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, loop.quit)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())

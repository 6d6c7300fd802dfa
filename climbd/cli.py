"""Command line: ``climbd run``, ``ingest``, ``export``, ``pair``, ``token``,
``admin-password``, ``check-config``.

``pair``, ``token`` and ``admin-password`` talk to the running daemon over its local admin
socket (``<state dir>/admin.sock``: root and the service user only); ``pair`` falls back to
the database when no daemon runs.

Exit codes: 0 success, 1 a runtime failure (bad video, storage), 2 bad usage or config.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from climbd import __version__
from climbd.config import (
    Config,
    config_file_keys,
    config_sources,
    load_config,
    resolve_state_dir,
    salvage_config,
    with_overrides,
)
from climbd.errors import ClimbdError, ConfigError
from climbd.statedir import StateDir
from climbd.visibility import SYSTEM, viewing

if TYPE_CHECKING:
    from climbd.security.local import AdminClient

__all__ = ["main"]

log = logging.getLogger("climbd")


def _setup_logging(level: str) -> None:
    from climbd.service import setup_logging

    setup_logging(level)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="climbd", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"climbd {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the daemon (capture, pose, recording, HTTP)")
    run.add_argument("--config", help="TOML config file (default: built-in defaults)")
    run.add_argument("--source", help="camera (/dev/video0, 0), video file or rtsp:// URL")
    run.add_argument("--loop", action="store_true", default=None,
                     help="loop a video file source")
    run.add_argument("--state-dir", help="database and sessions (default: $STATE_DIRECTORY "
                     "or ~/.local/state/climbd)")
    run.add_argument("--host", help="HTTP listen address")
    run.add_argument("--port", type=int, help="HTTP port (0 = any free port)")
    run.add_argument("--strict", action="store_true",
                     help="exit on a bad config file instead of starting in safe mode")

    ing = sub.add_parser("ingest", help="turn video files into sessions (pose on every frame)")
    ing.add_argument("videos", nargs="+", help="video files")
    ing.add_argument("--name", help="session name (default: the file name)")
    ing.add_argument("--config", help="TOML config file (pose settings)")
    ing.add_argument("--state-dir", help="as for run")
    ing.add_argument("--json", action="store_true", help="print one JSON object per session")

    from climbd.export.cli import add_export_parser

    add_export_parser(sub)

    pair = sub.add_parser("pair", help="print a single-use code that pairs a wall tablet "
                          "(or, with --admin, sets/resets the admin password) at /pair")
    pair.add_argument("--admin", action="store_true",
                      help="an admin code: set or reset the admin password")
    pair.add_argument("--config", help="TOML config file (security.pairing_code_ttl_s)")
    pair.add_argument("--state-dir", help="the daemon's state directory, e.g. /var/lib/climbd "
                      "for the systemd service (default as for run)")

    tok = sub.add_parser("token", help="API tokens (Authorization: Bearer) via the running "
                         "daemon's admin socket")
    tok_sub = tok.add_subparsers(dest="token_command", required=True)
    create = tok_sub.add_parser("create", help="make a token and print its secret (once)")
    create.add_argument("--name", default="token", help="what uses it, e.g. 'red button'")
    create.add_argument("--scope", default="trigger",
                        choices=["trigger", "viewer", "read", "admin"],
                        help="trigger: recording triggers; read: read-only; viewer: read and "
                        "the live view; admin: everything")
    tok_sub.add_parser("list", help="list tokens (never their secrets)")
    revoke = tok_sub.add_parser("revoke", help="revoke a token (its live connections close)")
    revoke.add_argument("id", type=int)
    for sp in tok_sub.choices.values():
        sp.add_argument("--state-dir", help="the daemon's state directory (as for run)")

    pw = sub.add_parser("admin-password", help="set or reset the admin password (read from "
                        "stdin, or asked for on a terminal) via the admin socket")
    pw.add_argument("--state-dir", help="the daemon's state directory (as for run)")

    chk = sub.add_parser("check-config", help="validate a config file and print the result")
    chk.add_argument("file")

    prb = sub.add_parser("probe", help="measure this box: decode, encode and pose ms per "
                         "frame at the configured size, and what it can sustain")
    prb.add_argument("--config", help="config file (default: built-in defaults)")
    prb.add_argument("--clip", help="a video file to decode and run pose on (default: "
                     "capture.source if it is a file, else grey frames)")
    prb.add_argument("--frames", type=int, default=60, help="frames per measurement")
    prb.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def _run(args: argparse.Namespace) -> int:
    """Run the daemon; a bad config file starts it in safe mode (UI reachable, no capture)."""
    from climbd.daemon import Daemon

    overrides = {"capture.source": args.source, "capture.loop": args.loop,
                 "server.host": args.host, "server.port": args.port}
    safe_mode = None
    try:
        config = with_overrides(load_config(args.config), overrides)
    except ConfigError as exc:
        if args.strict or args.config is None:
            raise
        # safe mode keeps every valid section of the owner's file (TLS included, or no
        # start at all), and never deletes anything (climbd.config.salvage_config)
        salvaged, kept_problems = salvage_config(args.config)
        safe_mode = str(exc)
        if kept_problems:
            safe_mode += " — " + "; ".join(kept_problems)
        config = with_overrides(salvaged, {k: v for k, v in overrides.items()
                                           if k.startswith("server.")})
    _setup_logging(config.log_level)
    state_dir = resolve_state_dir(args.state_dir)
    sources = config_sources(
        set() if safe_mode else config_file_keys(args.config),
        overrides if not safe_mode else {k: v for k, v in overrides.items()
                                         if k.startswith("server.")})
    daemon = Daemon(config, state_dir, safe_mode=safe_mode, config_sources=sources)
    asyncio.run(daemon.run_forever())
    return 0


async def _ingest(args: argparse.Namespace, config: Config) -> int:
    from climbd.ingest import ingest_file, terminal_progress
    from climbd.storage import Database

    state_dir = resolve_state_dir(args.state_dir)
    paths = StateDir(state_dir)
    paths.create()
    db = await Database.open(paths.db)
    failures = 0
    try:
        for video in args.videos:
            name = args.name or Path(video).stem
            try:
                result = await ingest_file(video, db, state_dir, config.pose, name=name,
                                           progress=terminal_progress(name))
            except ClimbdError as exc:
                failures += 1
                print(f"climbd ingest: {video}: {exc}", file=sys.stderr)
                continue
            if args.json:
                print(json.dumps(result.to_dict()), flush=True)
            else:
                print(f"session {result.id} {result.name!r}: {result.frames} frames, "
                      f"{result.frames_with_pose} with pose, {result.duration_s:.2f} s, "
                      f"video {state_dir / result.video}", flush=True)
    finally:
        await db.close()
    return 1 if failures else 0


def _admin_client(state_dir_arg: str | None) -> AdminClient:
    from climbd.security.local import AdminClient

    return AdminClient(resolve_state_dir(state_dir_arg) / "admin.sock")


async def _pair(args: argparse.Namespace, config: Config) -> int:
    """Print a new 12-digit pairing code: made by the running daemon over its admin socket,
    or, with no daemon running, stored (hashed, with its expiry) in its database."""
    from climbd.security.crypto import CLI_CODE_DIGITS, format_code
    from climbd.security.local import AdminSocketError
    from climbd.security.store import AuthStore
    from climbd.storage import Database

    kind: Literal["device", "admin"] = "admin" if args.admin else "device"
    ttl = config.security.pairing_code_ttl_s
    try:
        answer = _admin_client(args.state_dir).pairing_code(kind)
        text, ttl = str(answer["code"]), float(answer["ttl_s"])
    except AdminSocketError as exc:
        if exc.status:
            raise ClimbdError(str(exc)) from None
        paths = StateDir(resolve_state_dir(args.state_dir))
        paths.create()
        db = await Database.open(paths.db)
        try:
            code, _expires = await AuthStore(db).create_code(kind, ttl, "cli",
                                                             digits=CLI_CODE_DIGITS)
        finally:
            await db.close()
        text = format_code(code)
    what = ("set or reset the admin password" if args.admin else "pair a wall tablet")
    print(text, flush=True)
    print(f"single-use code to {what} at http(s)://<appliance>/pair, valid {ttl / 60:.0f} "
          "min", file=sys.stderr)
    return 0


def _token(args: argparse.Namespace) -> int:
    """``climbd token create|list|revoke``."""
    from climbd.security.local import AdminSocketError

    client = _admin_client(args.state_dir)
    try:
        if args.token_command == "create":
            tok = client.create_token(args.name, args.scope)
            print(tok["token"], flush=True)
            print(f"API token {tok['id']} {tok['name']!r}, scope {tok['scope']}: use it as "
                  "'Authorization: Bearer <token>'; it is not shown again", file=sys.stderr)
        elif args.token_command == "list":
            for t in client.tokens():
                print(f"{t['id']}\t{t['scope']}\t{t['name']}")
        else:
            t = client.revoke_token(args.id)
            print(f"revoked API token {t['id']} {t['name']!r}", file=sys.stderr)
    except AdminSocketError as exc:
        print(f"climbd: {exc}", file=sys.stderr)
        return 1
    return 0


def _admin_password(args: argparse.Namespace) -> int:
    """``climbd admin-password``: the new password from a terminal prompt or stdin."""
    import getpass

    from climbd.security.local import AdminSocketError

    if sys.stdin.isatty():
        password = getpass.getpass("New admin password: ")
        if getpass.getpass("Again: ") != password:
            print("climbd: the passwords differ", file=sys.stderr)
            return 2
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    try:
        _admin_client(args.state_dir).set_admin_password(password)
    except AdminSocketError as exc:
        print(f"climbd: {exc}", file=sys.stderr)
        return 1
    print("admin password set; every admin session ended", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``climbd`` command."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    args = _parser().parse_args(argv)
    try:
        if args.command == "check-config":
            config = load_config(args.file)
            print(f"{args.file}: OK")
            return 0
        if args.command == "run":
            return _run(args)
        if args.command == "probe":
            from climbd.device import format_probe, probe

            logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
            result = probe(load_config(args.config), args.clip, max(2, args.frames))
            print(json.dumps(result) if args.json else format_probe(result))
            return 0
        if args.command == "pair":
            with viewing(SYSTEM):  # the CLI acts for the appliance (climbd.visibility)
                return asyncio.run(_pair(args, load_config(args.config)))
        if args.command == "token":
            return _token(args)
        if args.command == "admin-password":
            return _admin_password(args)
        if args.command == "export":
            from climbd.export.cli import run_export

            return run_export(args)
        if args.command == "ingest":
            config = load_config(args.config)
            logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
            with viewing(SYSTEM):
                return asyncio.run(_ingest(args, config))
    except ConfigError as exc:
        print(f"climbd: {exc}", file=sys.stderr)
        return 2
    except ClimbdError as exc:
        print(f"climbd: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())

"""Ghost replay: a recorded session's skeleton over the live video, paced by its recorded
timestamps.

- :mod:`climbd.ghost.pacer` — pure pacing: recorded timestamps to clock times (formula).
- :mod:`climbd.ghost.wire` — the binary ghost pose and the JSON control messages.
- :mod:`climbd.ghost.player` — the async player of one viewer, over a ``GhostHost``.
- :mod:`climbd.ghost.live` — the live glue: one player per viewer data channel
  (:class:`~climbd.ghost.live.GhostService`, built by :class:`climbd.daemon.Daemon`).

No HTTP here; ``GET /api/ghost/stats`` is in :mod:`climbd.api.ghost`.
"""

from climbd.ghost.pacer import MAX_SPEED, MIN_SPEED, Due, GhostPacer, check_speed
from climbd.ghost.player import GhostHost, GhostPlayer, GhostSession
from climbd.ghost.wire import (
    FLAG_DETECTED,
    FLAG_RTP,
    FLAG_STILL,
    GHOST_HEADER,
    KIND_GHOST,
    GhostControl,
    GhostMessage,
    decode_ghost,
    pack_ghost,
)

__all__ = [
    "FLAG_DETECTED",
    "FLAG_RTP",
    "FLAG_STILL",
    "GHOST_HEADER",
    "KIND_GHOST",
    "MAX_SPEED",
    "MIN_SPEED",
    "Due",
    "GhostControl",
    "GhostHost",
    "GhostMessage",
    "GhostPacer",
    "GhostPlayer",
    "GhostSession",
    "check_speed",
    "decode_ghost",
    "pack_ghost",
]

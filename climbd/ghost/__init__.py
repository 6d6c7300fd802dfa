"""Ghost replay: a recorded session's skeleton over the live video, paced by its recorded
timestamps.

- :mod:`climbd.ghost.player` — the pacer, the wire format and the player (see its
  docstring for the formulas, the control messages and the binary layout).
- :mod:`climbd.ghost.live` — the live glue: one player per viewer data channel
  (:class:`~climbd.ghost.live.GhostService`, built by :class:`climbd.daemon.Daemon`).

No HTTP here; ``GET /api/ghost/stats`` is in :mod:`climbd.api.ghost`.
"""

from climbd.ghost.player import (
    FLAG_DETECTED,
    FLAG_RTP,
    FLAG_STILL,
    GHOST_HEADER,
    KIND_GHOST,
    MAX_SPEED,
    MIN_SPEED,
    Due,
    GhostControl,
    GhostHost,
    GhostMessage,
    GhostPacer,
    GhostPlayer,
    GhostSession,
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
    "decode_ghost",
    "pack_ghost",
]

"""Live view: WebRTC video from the shared H.264 encode plus a landmark data channel.

Modules are named after the objects of the specifications they implement:

- :mod:`.endpoint` — the WHEP endpoint (draft-ietf-wish-whep): viewer limit, sessions;
- :mod:`.session` — one WHEP session (an ``RTCPeerConnection``) and its life cycle;
- :mod:`.offer` — checks on the viewer's SDP offer (JSEP, RFC 9429);
- :mod:`.track` — the ``MediaStreamTrack`` that hands shared packets to aiortc;
- :mod:`.datachannel` — the ``RTCDataChannel`` named ``landmarks``;
- :mod:`.landmarks` — the landmark message format (binary, ~280 bytes per pose);
- :mod:`.feed` — poses matched with their packets' timestamps, encoded once;
- :mod:`.delay` — the delayed live view: buffered packets and poses replayed N s late;
- :mod:`.keyframes` — rate-limited IDR requests (new viewers, PLI/FIR);
- :mod:`.ice` — ``RTCIceServer`` list and host-candidate restriction;
- :mod:`.errors` — re-exports the live view's errors from :mod:`climbd.errors`.

No HTTP here: :mod:`climbd.api.whep` and :mod:`climbd.api.live` are the aiohttp faces.
"""

from climbd.streaming.endpoint import LiveSource, WhepEndpoint
from climbd.streaming.errors import (
    CandidateError,
    DelayOutOfRange,
    LiveViewError,
    OfferError,
    UnknownViewer,
    ViewerLimitReached,
)

__all__ = [
    "CandidateError",
    "DelayOutOfRange",
    "LiveSource",
    "LiveViewError",
    "OfferError",
    "UnknownViewer",
    "ViewerLimitReached",
    "WhepEndpoint",
]

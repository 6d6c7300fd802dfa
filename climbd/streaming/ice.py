"""ICE settings of a peer connection: ICE servers and the host candidates it may offer.

- No STUN/TURN unless configured: aiortc falls back to Google's public STUN server when
  ``RTCConfiguration.iceServers`` is None, which an offline appliance must never try, so the
  configuration always carries an explicit (usually empty) list.
- aioice gathers one host candidate per address that ``aioice.ice.get_host_addresses``
  returns: every interface address except 127.0.0.1. :func:`restrict_host_candidates`
  replaces that list *for one peer connection*: its ICE agents (``aioice.Connection``) bind
  only the given addresses, including 127.0.0.1 if asked (tests and benchmarks keep all
  traffic on loopback that way). Patching ``get_host_addresses`` itself would change every
  connection in the process, including other peers and test clients.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Any

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection

__all__ = ["ice_configuration", "ice_transports", "restrict_host_candidates"]


def ice_configuration(ice_servers: Sequence[str] = ()) -> RTCConfiguration:
    """An ``RTCConfiguration`` with exactly ``ice_servers`` (STUN/TURN URLs; may be empty)."""
    return RTCConfiguration(iceServers=[RTCIceServer(urls=url) for url in ice_servers])


def ice_transports(pc: RTCPeerConnection) -> list[Any]:
    """The ``RTCIceTransport`` objects a peer connection has created so far.

    They exist once media sections are known: after ``addTransceiver``/``createDataChannel``
    on the offering side, after ``setRemoteDescription(offer)`` on the answering side.
    """
    seen: dict[int, Any] = {}
    for transceiver in pc.getTransceivers():
        ice = transceiver.sender.transport.transport
        seen[id(ice)] = ice
    if pc.sctp is not None:
        ice = pc.sctp.transport.transport
        seen[id(ice)] = ice
    return list(seen.values())


def restrict_host_candidates(pc: RTCPeerConnection, addresses: Iterable[str]) -> None:
    """Make ``pc`` gather host candidates on ``addresses`` only.

    Call it after the media sections exist (see :func:`ice_transports`) and before
    ``setLocalDescription`` (which gathers). An address that is not configured on this host
    gives no candidate (aioice logs "Could not bind").

    Raises:
        ValueError: an address is not an IP address.
    """
    chosen = [str(ipaddress.ip_address(a)) for a in addresses]
    for transport in ice_transports(pc):
        connection = transport._connection  # aioice.Connection (aiortc uses it the same way)
        original = connection.get_component_candidates
        if isinstance(original, _OnAddresses):
            original = original.original
        connection.get_component_candidates = _OnAddresses(original, chosen)


class _OnAddresses:
    """``Connection.get_component_candidates`` with the host address list replaced."""

    def __init__(self, original: Any, addresses: list[str]):
        self.original = original
        self.addresses = addresses

    async def __call__(self, component: int, addresses: list[str], timeout: int = 5) -> Any:
        return await self.original(component=component, addresses=self.addresses,
                                   timeout=timeout)

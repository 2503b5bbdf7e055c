"""Who is really calling: X-Forwarded-* and Forwarded are believed only from configured proxy addresses.

The client address is the right-most address of the forwarding chain that is not a trusted proxy (everything to
its left was written by parties we do not trust). From an untrusted peer, every forwarding header is ignored and
the peer's own address is the client. This one rule feeds the audit log, and later rate limits.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

_FORWARDED_FOR = re.compile(r'for="?\[?([^\]";,]+)\]?(?::\d+)?"?', re.IGNORECASE)
_FORWARDED_PROTO = re.compile(r"proto=\"?(https?)\"?", re.IGNORECASE)
_FORWARDED_HOST = re.compile(r'host="?([^";,]+)"?', re.IGNORECASE)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(slots=True)
class Peer:
    client_ip: str
    scheme: str
    host: str | None
    forwarded_for: str
    """The X-Forwarded-For value to send upstream: the trusted chain plus the direct peer."""


_KNOWN_MAX = 4096


class TrustedProxies:
    def __init__(self, networks: tuple[str, ...]) -> None:
        self._networks: tuple[Network, ...] = tuple(ipaddress.ip_network(n, strict=False) for n in networks)
        self._known: dict[str, bool] = {}
        """Answers already given: the same few proxy addresses connect again and again, and parsing an address
        costs more than the rest of the rule. Bounded: emptied when full."""

    def __bool__(self) -> bool:
        return bool(self._networks)

    def trusts(self, address: str) -> bool:
        known = self._known.get(address)
        if known is not None:
            return known
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            trusted = False
        else:
            trusted = any(ip in network for network in self._networks)
        if len(self._known) >= _KNOWN_MAX:
            self._known.clear()
        self._known[address] = trusted
        return trusted


def _valid_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def resolve_peer(
    peer_ip: str, scheme: str, raw: list[tuple[bytes, bytes]], trusted: TrustedProxies, *, host: str | None = None
) -> Peer:
    """Who is calling. `host` is the Host header when the caller has read it already (it then need not be
    looked for again when nothing else would be believed)."""
    if host is not None and (not trusted or not trusted.trusts(peer_ip)):
        return Peer(client_ip=peer_ip, scheme=scheme, host=host, forwarded_for=peer_ip)
    xff: list[str] = []
    proto = forwarded_host = None
    forwarded: list[str] = []
    for name, value in raw:
        if name == b"host":
            host = value.decode("latin-1")
        elif not trusted or not trusted.trusts(peer_ip):
            continue
        elif name == b"x-forwarded-for":
            xff.extend(part.strip() for part in value.decode("latin-1").split(","))
        elif name == b"x-forwarded-proto":
            proto = value.decode("latin-1").strip().lower()
        elif name == b"x-forwarded-host":
            forwarded_host = value.decode("latin-1").strip()
        elif name == b"forwarded":
            text = value.decode("latin-1")
            forwarded.extend(_FORWARDED_FOR.findall(text))
            proto = proto or next(iter(_FORWARDED_PROTO.findall(text)), None)
            forwarded_host = forwarded_host or next(iter(_FORWARDED_HOST.findall(text)), None)
    if not trusted or not trusted.trusts(peer_ip):
        return Peer(client_ip=peer_ip, scheme=scheme, host=host, forwarded_for=peer_ip)
    chain = [address for address in (xff or forwarded) if _valid_ip(address)]
    client = peer_ip
    for address in reversed(chain):
        client = address
        if not trusted.trusts(address):
            break
    return Peer(
        client_ip=client,
        scheme=proto if proto in ("http", "https") else scheme,
        host=forwarded_host or host,
        forwarded_for=", ".join([*chain, peer_ip]),
    )

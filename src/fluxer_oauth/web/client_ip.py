"""The client's IP address: the socket peer, or X-Forwarded-For when the peer is a
trusted proxy (walking the list from the right, past every trusted hop)."""

from __future__ import annotations

import functools
import ipaddress


class ClientIpResolver:
    def __init__(self, trusted: str) -> None:
        self._networks = [ipaddress.ip_network(item.strip(), strict=False) for item in trusted.split(",") if item.strip()]

    @property
    def trusts_proxies(self) -> bool:
        """Whether any X-Forwarded-For can be believed (else the peer is the client)."""
        return bool(self._networks)

    def _trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._networks)

    def resolve(self, scope) -> str:
        """From an ASGI scope."""
        peer = (scope.get("client") or ("unknown", 0))[0]
        if not self._networks:
            return peer
        return self.resolve_forwarded(
            peer, [value.decode("latin-1") for name, value in scope["headers"] if name == b"x-forwarded-for"])

    def resolve_forwarded(self, peer: str, header_values: list[str]) -> str:
        """``peer``, or the hop of X-Forwarded-For (all its header lines, in order) that
        the first untrusted address names."""
        if not self._networks or not self._trusted(peer):
            return peer
        forwarded = [part.strip() for value in header_values for part in value.split(",")]
        for hop in reversed(forwarded):
            if not self._trusted(hop):
                try:
                    return str(ipaddress.ip_address(hop))
                except ValueError:
                    return peer  # a malformed hop: do not believe the header at all
        return peer


def throttle_address(address: str) -> str:
    """What per-address throttles count: an IPv4 address as it is, an IPv6 address by its
    /64 (one subscriber's network: a client picks any address in it, so counting each would
    let it start afresh at will), an IPv4-mapped IPv6 address as its IPv4 address."""
    if ":" not in address:
        return address
    return _ipv6_network(address)


@functools.lru_cache(maxsize=4096)
def _ipv6_network(address: str) -> str:
    try:
        ip = ipaddress.IPv6Address(address)
    except ValueError:
        return address
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((ip, 64), strict=False))

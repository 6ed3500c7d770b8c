"""Which addresses a download may connect to: ``asyncfetch serve``'s guard against being made
to fetch from the local network (server-side request forgery).

A :class:`NetPolicy` judges the address actually connected to, after name resolution, on
both receive paths and on every redirect: the fast path asks :meth:`NetPolicy.addresses`
where to connect, and the aiohttp path resolves names through it and checks each hop's
literal address (:mod:`._transport`). An address is refused when it is loopback, link-local,
private, unique-local, unspecified, multicast or otherwise not public, or a cloud metadata
endpoint, unless the policy allows it (``allow_private``: all of those but the metadata
endpoints; ``allowed``: the networks listed, whatever they hold).

Host spellings are read as the system's resolver reads them, so ``2130706433``,
``0x7f000001``, ``0177.0.0.1`` and ``127.1`` are all 127.0.0.1, and an IPv6 address that
carries an IPv4 one (``::ffff:127.0.0.1``, NAT64, 6to4, Teredo) is judged by that too.

The library and ``asyncfetch get`` set no policy: they connect wherever they are told.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

from .._errors import AddressBlocked, InvalidRequest

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
#: Resolves ``(host, port)`` to IP addresses as text; tests inject one.
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]

#: Cloud metadata endpoints (AWS, GCP and Azure IMDS; AWS over IPv6; Alibaba; Oracle; Azure's
#: WireServer): refused even with ``allow_private``, unless a network in ``allowed`` names them.
METADATA = tuple(
    ipaddress.ip_network(n)
    for n in (
        "169.254.169.254/32",
        "fd00:ec2::254/128",
        "100.100.100.200/32",
        "192.0.0.192/32",
        "168.63.129.16/32",
    )
)
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
#: all-numeric hosts the C resolver reads as IPv4 (``2130706433``, ``0x7f.1``, ``0177.0.0.1``)
_LEGACY_IPV4 = re.compile(r"(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}\.?", re.IGNORECASE)
HINT = "asyncfetch serve allows it with --allow-private or --allow-net CIDR"


async def system_resolver(host: str, port: int) -> list[str]:
    """The system's addresses for ``host`` (``getaddrinfo``, off the loop)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def literal_address(host: str) -> Address | None:
    """``host`` as an IP address if it spells one (``[::1]``, ``2130706433``, ...), else None."""
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    if _LEGACY_IPV4.fullmatch(text):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(text.rstrip(".")))
        except OSError:
            return None
    return None


def _carried(address: Address) -> tuple[Address, ...]:
    """The addresses a connection to ``address`` really reaches or relays to."""
    if isinstance(address, ipaddress.IPv4Address):
        return (address,)
    if address.ipv4_mapped is not None:
        return (address.ipv4_mapped,)
    if int(address) >> 32 == 0 and int(address) > 1:  # IPv4-compatible ::a.b.c.d
        return (ipaddress.IPv4Address(int(address) & 0xFFFFFFFF),)
    carried: list[Address] = [address]
    if any(address in net for net in _NAT64):
        carried.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    if address.sixtofour is not None:
        carried.append(address.sixtofour)
    if address.teredo is not None:
        carried.extend(address.teredo)
    return tuple(carried)


def _kind(address: Address) -> str | None:
    """What makes ``address`` local, or None for a public address."""
    if any(address in net for net in METADATA):
        return "a cloud metadata address"
    checks = (
        ("loopback", address.is_loopback),
        ("unspecified", address.is_unspecified),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
        ("not public", not address.is_global),
    )
    return next((f"a {name} address" for name, found in checks if found), None)


def parse_networks(values: Iterable[str | Network]) -> tuple[Network, ...]:
    """CIDRs (``10.0.0.0/8``, ``fd00::/8``, a bare address) as networks.

    Raises:
        InvalidRequest: one is not a network or an address.
    """
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value, strict=False))
        except ValueError:
            raise InvalidRequest(
                f"{value!r} is not a network; give one like 10.0.0.0/8 or fd00::/8"
            ) from None
    return tuple(networks)


@dataclass(frozen=True, kw_only=True)
class NetPolicy:
    """Which addresses downloads may connect to (see the module docstring).

    Args:
        allow_private: allow loopback, link-local, private and unique-local addresses
            (not the cloud metadata endpoints).
        allowed: networks allowed whatever they hold (CIDR text or networks).
        resolver: resolves names to addresses (default: the system's); tests inject one.
    """

    allow_private: bool = False
    allowed: tuple[Network, ...] = ()
    resolver: Resolver = field(default=system_resolver, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed", parse_networks(self.allowed))

    def refusal(self, address: Address) -> str | None:
        """Why a connection to ``address`` is refused, or None when it is allowed."""
        for reached in _carried(address):
            if any(reached.version == net.version and reached in net for net in self.allowed):
                continue
            kind = _kind(reached)
            if kind is None or (self.allow_private and kind != "a cloud metadata address"):
                continue
            shown = f"{address} ({reached})" if reached != address else str(address)
            return f"{shown}, {kind}"
        return None

    async def addresses(self, host: str, port: int, *, url: str) -> list[str]:
        """The addresses ``host`` may be connected to at: its own if it spells one, else
        the allowed ones it resolves to, in the resolver's order.

        Raises:
            AddressBlocked: the address, or every address ``host`` resolves to, is refused.
            OSError: ``host`` does not resolve.
        """
        literal = literal_address(host)
        found = [literal] if literal is not None else await self._resolve(host, port)
        allowed = [str(a) for a in found if self.refusal(a) is None]
        if allowed:
            return list(dict.fromkeys(allowed))
        if not found:
            raise socket.gaierror(socket.EAI_NONAME, f"{host} has no address")
        why = self.refusal(found[0])
        named = f"{host}: it resolves to " if literal is None else ""
        raise AddressBlocked(
            f"{url}: refused to connect to {named}{why}; downloads into the local network are "
            f"not allowed here ({HINT})",
            url=url,
            address=str(found[0]),
        )

    async def _resolve(self, host: str, port: int) -> list[Address]:
        return [ipaddress.ip_address(a) for a in await self.resolver(host.rstrip("."), port)]

"""Which callback URLs may be called: not loopback, private, link-local, multicast or
reserved addresses (SSRF), checked at submission and again at every delivery through the
connector's resolver, so DNS rebinding cannot slip past."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from sse_jobs.errors import ValidationFailed

MAX_URL = 2048


_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address reaches through a translation or tunnel: mapped
    (``::ffff:a.b.c.d``), compatible (``::a.b.c.d``), NAT64 (``64:ff9b::a.b.c.d``) or
    6to4 (``2002:AABB:CCDD::``). Routers and dual-stack sockets deliver these to the IPv4
    host, so ``[64:ff9b::7f00:1]`` is loopback however global its IPv6 form looks."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _IPV4_COMPATIBLE or ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _forbidden(address: str) -> bool:
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(
        address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _NAT64_LOCAL:  # RFC 8215: translators a site runs for itself
            return True
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            ip = embedded
    return not ip.is_global or ip.is_multicast


def forbidden_literal(url: str) -> bool:
    """Whether ``url``'s host is an IP address that may not be called. aiohttp never asks
    the resolver about an address literal, so ``GuardedResolver`` cannot see it."""
    host = urlsplit(url).hostname or ""
    try:
        return _forbidden(host)
    except ValueError:  # a name: the resolver checks what it resolves to
        return False


class GuardedResolver(AbstractResolver):
    """Resolves like aiohttp does, but refuses hosts with non-public addresses."""

    def __init__(self, allow_private: bool) -> None:
        self._inner = DefaultResolver()
        self._allow_private = allow_private

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if not self._allow_private and any(_forbidden(r["host"]) for r in results):
            raise OSError(f"{host} resolves to a loopback, private or reserved address")
        return results

    async def close(self) -> None:
        await self._inner.close()


async def check_callback_url(url: str, allow_private: bool) -> None:
    """Refuse (422) a callback URL that is not http(s) or points at a private address."""
    def refuse(message: str) -> ValidationFailed:
        return ValidationFailed(f"callback_url: {message}",
                                [{"field": "callback_url", "message": message}])

    try:
        parts = urlsplit(url)
        port = parts.port  # parsed on access: a port out of range raises here
    except ValueError as exc:  # "Invalid IPv6 URL", "Port out of range 0-65535", ...
        raise refuse(f"is not a valid URL: {exc}") from None
    if len(url) > MAX_URL or parts.scheme not in {"http", "https"} or not parts.hostname:
        raise refuse("must be an http or https URL with a host")
    if parts.username or parts.password:
        raise refuse("must not carry credentials")
    resolver = GuardedResolver(allow_private)
    try:
        await resolver.resolve(parts.hostname, port or 0, socket.AF_UNSPEC)
    except OSError as exc:
        raise refuse(str(exc) if "resolves to" in str(exc) else
                     f"cannot resolve {parts.hostname}") from None
    except UnicodeError:  # not a host name at all: an empty or over-long label
        raise refuse(f"{parts.hostname!r} is not a valid host name") from None
    finally:
        await resolver.close()

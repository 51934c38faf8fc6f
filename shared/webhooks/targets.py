"""Where a webhook may point: public addresses, plus the private networks an operator allows.

A webhook URL is user input that Boreas will call, so it must not reach the machines around
Boreas (server-side request forgery): loopback, link-local (cloud metadata services), private,
shared, reserved and every other special-purpose range (:mod:`shared.webhooks.special_addresses`)
are refused unless ``BOREAS_WEBHOOK_ALLOWED_NETS`` names them.

The check runs twice: when the webhook is registered (to refuse early, with a reason) and before
every delivery, on a fresh resolution whose address the request is then pinned to, so a name that
later resolves elsewhere (DNS rebinding) cannot slip past.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from shared.webhooks.special_addresses import special_purpose

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_URL_LENGTH = 2048


class TargetRefused(ValueError):
    """The URL may not be called; the message says why, in words fit for the API caller."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str  # lower case, IPv6 without brackets
    port: int
    path: str  # path and query

    def url_at(self, address: IPAddress) -> str:
        """The URL with its host replaced by ``address`` (the Host header keeps the name)."""
        host = f"[{address}]" if address.version == 6 else str(address)
        return f"{self.scheme}://{host}:{self.port}{self.path}"

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def parse_networks(text: str) -> tuple[IPNetwork, ...]:
    """``"127.0.0.0/8, 10.1.0.0/16"`` → networks; raises ValueError on a malformed one."""
    return tuple(ipaddress.ip_network(part.strip()) for part in text.split(",") if part.strip())


def parse_target(url: str) -> Target:
    parts, port = _split(url)
    scheme = parts.scheme.lower()
    _check_parts(parts, scheme, port)
    host = _ascii_host(parts.hostname or "")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(scheme, host, port or (443 if scheme == "https" else 80), path)


def _split(url: str) -> tuple[SplitResult, int | None]:
    """The URL's parts and port, refusing a URL too long, malformed, or with a space or control
    character in it."""
    if len(url) > MAX_URL_LENGTH:
        raise TargetRefused(f"A webhook URL has at most {MAX_URL_LENGTH} characters.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TargetRefused(f"That is not a usable URL: {exc}.") from None
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise TargetRefused("A webhook URL has no spaces or control characters.")
    return parts, port


def _check_parts(parts: SplitResult, scheme: str, port: int | None) -> None:
    if scheme not in ("http", "https"):
        raise TargetRefused("A webhook URL starts with https:// (or http://).")
    if not parts.hostname:
        raise TargetRefused("A webhook URL needs a host.")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused(
            "Put no credentials in a webhook URL: anyone who can read the webhook would see "
            "them. Verify the webhook-signature header instead."
        )
    if parts.fragment:
        raise TargetRefused("A webhook URL has no #fragment.")
    if port == 0:
        raise TargetRefused("A webhook URL's port is 1 to 65535.")


def _ascii_host(hostname: str) -> str:
    """An internationalised name travels in its ASCII form (Host header, SNI, resolver)."""
    try:
        return hostname.lower().encode("idna").decode("ascii")
    except UnicodeError:
        raise TargetRefused(f"{hostname} is not a usable host name.") from None


# The well-known NAT64 prefix (RFC 6052) carries an IPv4 address that a gateway forwards to:
# it is judged by that address.
NAT64 = ipaddress.ip_network("64:ff9b::/96")


def refusal(address: IPAddress, allowed: Sequence[IPNetwork]) -> str | None:
    """Why ``address`` may not be called, or None if it may."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return refusal(address.ipv4_mapped, allowed)
        if address in NAT64 and not any(address in network for network in allowed):
            inner = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
            why = refusal(inner, allowed)
            return None if why is None else f"{address} carries {inner}: {why}"
    if any(address in network for network in allowed):
        return None
    kind = special_purpose(address)
    return None if kind is None else f"{address} is {kind}"


class Resolver:
    """Name resolution on threads of its own, bounded: a DNS server that never answers ties up
    these threads, not those the rest of the process needs (password hashing, for one)."""

    def __init__(self, threads: int = 8) -> None:
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="resolve")

    async def addresses(self, host: str, port: int) -> list[IPAddress]:
        infos = await asyncio.get_running_loop().run_in_executor(
            self._pool, functools.partial(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
        )
        return list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


async def resolve(
    target: Target, allowed: Sequence[IPNetwork], resolver: Resolver
) -> list[IPAddress]:
    """The addresses of ``target`` that may be called, in resolver order; raises
    :class:`TargetRefused` when there are none (or the name does not resolve)."""
    try:
        literal = ipaddress.ip_address(target.host)
    except ValueError:
        literal = None
    if literal is not None:
        if (why := refusal(literal, allowed)) is not None:
            raise TargetRefused(f"Webhooks may not call {literal}: {why}. {_HINT}")
        return [literal]
    # A name that does not resolve and one that resolves only to private addresses get the same
    # answer: which names exist around Boreas, and where they point, is not the caller's business.
    refused = TargetRefused(
        f"Webhooks may not call {target.host}: it has no public address. {_HINT}"
    )
    try:
        addresses = await resolver.addresses(target.host, target.port)
    except (socket.gaierror, UnicodeError):
        raise refused from None
    permitted = [a for a in addresses if refusal(a, allowed) is None]
    if not permitted:
        raise refused
    return permitted


_HINT = "An operator can allow private networks with BOREAS_WEBHOOK_ALLOWED_NETS."

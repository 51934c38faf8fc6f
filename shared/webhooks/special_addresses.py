"""Addresses a webhook may not reach unless an operator allows them: every block of IANA's IPv4
and IPv6 special-purpose address registries, multicast, and (IPv6) everything outside global
unicast 2000::/3. Listed here, not taken from :mod:`ipaddress`'s ``is_global``, whose idea of
"global" differs between Python releases and leaves some of these blocks in.

The registries are at https://www.iana.org/assignments/iana-ipv4-special-registry and
https://www.iana.org/assignments/iana-ipv6-special-registry.
"""

from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

IPV4_SPECIAL: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "a 'this network' address"),
    ("10.0.0.0/8", "a private address"),
    ("100.64.0.0/10", "a shared (carrier-grade NAT) address"),
    ("127.0.0.0/8", "a loopback address"),
    ("169.254.0.0/16", "a link-local address"),
    ("172.16.0.0/12", "a private address"),
    ("192.0.0.0/24", "an IETF protocol assignment"),
    ("192.0.2.0/24", "a documentation address"),
    ("192.31.196.0/24", "an AS112 address"),
    ("192.52.193.0/24", "an AMT address"),
    ("192.88.99.0/24", "a 6to4 relay anycast address"),
    ("192.168.0.0/16", "a private address"),
    ("192.175.48.0/24", "an AS112 direct delegation address"),
    ("198.18.0.0/15", "a benchmarking address"),
    ("198.51.100.0/24", "a documentation address"),
    ("203.0.113.0/24", "a documentation address"),
    ("224.0.0.0/4", "a multicast address"),
    ("240.0.0.0/4", "a reserved address"),
    ("255.255.255.255/32", "the broadcast address"),
)

IPV6_SPECIAL: tuple[tuple[str, str], ...] = (
    ("::1/128", "a loopback address"),
    ("::/128", "the unspecified address"),
    ("::/96", "an IPv4-compatible address"),
    ("::ffff:0:0:0/96", "an IPv4-translated address"),
    ("64:ff9b:1::/48", "a local-use IPv4/IPv6 translation address"),
    ("100::/64", "a discard-only address"),
    ("100:0:0:1::/64", "a dummy IPv6 address"),
    ("2001::/32", "a Teredo address"),
    ("2001::/23", "an IETF protocol assignment"),
    ("2001:db8::/32", "a documentation address"),
    ("2002::/16", "a 6to4 address"),
    ("2620:4f:8000::/48", "an AS112 direct delegation address"),
    ("3fff::/20", "a documentation address"),
    ("5f00::/16", "a segment routing address"),
    ("fc00::/7", "a unique local (private) address"),
    ("fe80::/10", "a link-local address"),
    ("fec0::/10", "a site-local address"),
    ("ff00::/8", "a multicast address"),
)

GLOBAL_UNICAST_V6 = ipaddress.ip_network("2000::/3")

_V4 = tuple((ipaddress.ip_network(net), name) for net, name in IPV4_SPECIAL)
_V6 = tuple((ipaddress.ip_network(net), name) for net, name in IPV6_SPECIAL)


def special_purpose(address: IPAddress) -> str | None:
    """What kind of non-public address this is ("a link-local address"), or None for a global
    unicast one. IPv4-mapped and NAT64 forms are the caller's to unwrap first."""
    table = _V4 if address.version == 4 else _V6
    # The most specific block names it: ::1 is loopback before it is IPv4-compatible.
    names = [(net.prefixlen, name) for net, name in table if address in net]
    if names:
        return max(names)[1]
    if address.version == 6 and address not in GLOBAL_UNICAST_V6:
        return "not a global unicast address"
    return None

"""Webhook URLs: what is refused (SSRF), what operators can allow, and how requests are pinned."""

import ipaddress
import socket

import pytest

from shared.config import ServiceSettings
from shared.webhooks.targets import (
    Resolver,
    Target,
    TargetRefused,
    parse_networks,
    parse_target,
    refusal,
    resolve,
)

NOTHING_ALLOWED = parse_networks("")
RESOLVER = Resolver(threads=2)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "::1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata services
        "fe80::1",
        "fd00::1",
        "100.64.0.1",  # carrier-grade NAT
        "0.0.0.0",
        "224.0.0.1",
        "::ffff:127.0.0.1",  # loopback in IPv6 clothing
        "::ffff:169.254.169.254",
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
        "64:ff9b:1::a00:1",  # local-use NAT64
        "2002:a00:1::",  # 6to4 of 10.0.0.1
        "2002:a9fe:a9fe::",  # 6to4 of 169.254.169.254
        "fec0::1",  # deprecated site-local
        # One of each further form in IANA's special-purpose registries (and beside them):
        "::a9fe:a9fe",  # IPv4-compatible (deprecated) form of 169.254.169.254
        "::ffff:0:a9fe:a9fe",  # IPv4-translated (SIIT) form of 169.254.169.254
        "::",  # unspecified
        "192.0.0.8",  # IPv4 dummy address, in IETF protocol assignments
        "192.0.0.9",  # PCP anycast
        "192.0.0.170",  # NAT64/DNS64 discovery
        "192.0.2.1",  # TEST-NET-1
        "198.51.100.7",  # TEST-NET-2
        "203.0.113.7",  # TEST-NET-3
        "198.18.0.1",  # benchmarking
        "192.88.99.1",  # 6to4 relay anycast
        "192.31.196.1",  # AS112-v4
        "192.52.193.1",  # AMT
        "192.175.48.1",  # direct delegation AS112
        "240.0.0.1",  # reserved
        "255.255.255.255",  # limited broadcast
        "239.1.2.3",  # multicast
        "100::1",  # discard-only
        "100:0:0:1::1",  # dummy IPv6 prefix
        "2001::1",  # Teredo
        "2001:2::1",  # benchmarking
        "2001:3::1",  # AMT
        "2001:20::1",  # ORCHIDv2
        "2001:db8::1",  # documentation
        "3fff::1",  # documentation
        "2002:808:808::",  # 6to4, whatever it carries
        "2620:4f:8000::1",  # direct delegation AS112
        "5f00::1",  # segment routing SIDs
        "ff02::1",  # multicast
        "4000::1",  # outside global unicast (2000::/3)
    ],
)
async def test_non_public_addresses_are_refused(address: str) -> None:
    assert refusal(ipaddress.ip_address(address), NOTHING_ALLOWED) is not None
    host = f"[{address}]" if ":" in address else address
    with pytest.raises(TargetRefused, match="BOREAS_WEBHOOK_ALLOWED_NETS"):
        await resolve(parse_target(f"http://{host}:8080/hook"), NOTHING_ALLOWED, RESOLVER)


@pytest.mark.parametrize(
    "address", ["93.184.215.14", "2606:4700::1111", "8.8.8.8", "64:ff9b::808:808"]
)
def test_public_addresses_pass(address: str) -> None:
    assert refusal(ipaddress.ip_address(address), NOTHING_ALLOWED) is None


async def test_an_allowed_network_lets_exactly_its_addresses_through() -> None:
    allowed = parse_networks("10.20.0.0/16")
    assert refusal(ipaddress.ip_address("10.20.3.4"), allowed) is None
    assert refusal(ipaddress.ip_address("10.21.3.4"), allowed) is not None
    assert await resolve(parse_target("http://10.20.3.4/"), allowed, RESOLVER) == [
        ipaddress.ip_address("10.20.3.4")
    ]


class Unresolvable(Resolver):
    """A resolver for which no name exists (no DNS query leaves the machine)."""

    async def addresses(self, host: str, port: int) -> list:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


async def test_names_are_resolved_and_checked() -> None:
    # A name's private addresses are not told to the caller, only that none is public.
    with pytest.raises(TargetRefused, match="no public address") as refused:
        await resolve(parse_target("http://localhost:9000/"), NOTHING_ALLOWED, RESOLVER)
    assert "127.0.0.1" not in str(refused.value)
    found = await resolve(
        parse_target("http://localhost:9000/"), parse_networks("127.0.0.0/8"), RESOLVER
    )
    assert ipaddress.ip_address("127.0.0.1") in found


async def test_a_name_that_does_not_resolve_and_a_private_one_get_the_same_answer() -> None:
    """Different answers would let a user map the names of the network around Boreas."""
    with pytest.raises(TargetRefused) as private:
        await resolve(parse_target("http://localhost:9000/"), NOTHING_ALLOWED, RESOLVER)
    with pytest.raises(TargetRefused) as unknown:
        await resolve(parse_target("http://localhost:9000/"), NOTHING_ALLOWED, Unresolvable())
    assert str(private.value) == str(unknown.value)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/", "https://"),
        ("file:///etc/passwd", "https://"),
        ("https://user:pw@example.com/", "no credentials"),
        ("https://example.com/#frag", "fragment"),
        ("https:///path", "host"),
        ("https://example.com:99999/", "not a usable URL"),
        ("https://example.com/" + "a" * 2100, "2048"),
        ("https://example.com/a\x01b", "control characters"),
        ("https://example.com/a\x7fb", "control characters"),
        ("https://example.com/a b", "control characters"),
        ("https://example.com:0/", "1 to 65535"),
        ("https://" + "a" * 70 + ".example/", "not a usable host name"),
    ],
)
def test_malformed_urls_are_refused_with_a_reason(url: str, reason: str) -> None:
    with pytest.raises(TargetRefused, match=reason):
        parse_target(url)


def test_an_internationalised_name_travels_in_its_ascii_form() -> None:
    target = parse_target("https://Bücher.example/in")
    assert target.host == "xn--bcher-kva.example"
    assert target.host_header == "xn--bcher-kva.example"


def test_requests_are_pinned_to_the_checked_address_and_keep_the_name() -> None:
    target = parse_target("https://Hooks.Example.com/in?x=1")
    assert target == Target("https", "hooks.example.com", 443, "/in?x=1")
    assert (
        target.url_at(ipaddress.ip_address("93.184.215.14")) == "https://93.184.215.14:443/in?x=1"
    )
    assert target.host_header == "hooks.example.com"
    v6 = parse_target("http://[2606:4700::1111]:8080/")
    assert v6.url_at(ipaddress.ip_address("2606:4700::1111")) == "http://[2606:4700::1111]:8080/"
    assert v6.host_header == "[2606:4700::1111]:8080"


def test_settings_allow_loopback_in_dev_only_unless_told() -> None:
    dev = ServiceSettings(env="dev")
    assert dev.webhook_networks() == (ipaddress.ip_network("127.0.0.0/8"),)
    prod = ServiceSettings(env="prod", amqp_url="amqp://boreas:pw@mq/", secret_key="x" * 43)
    assert prod.webhook_networks() == ()
    told = ServiceSettings(webhook_allowed_nets="10.0.0.0/8, fd00::/8")
    assert [str(n) for n in told.webhook_networks()] == ["10.0.0.0/8", "fd00::/8"]
    assert ServiceSettings(webhook_allowed_nets="").webhook_networks() == ()
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 network"):
        ServiceSettings(webhook_allowed_nets="10.0.0.0/33")

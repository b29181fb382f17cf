"""Client identity: spoofing cases, address forms, IPv6 prefixes, HMAC keys, configuration."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import random

import pytest

from triggergate.errors import ConfigurationError, RequestError
from triggergate.identity import (
    Client,
    IdentityPolicy,
    network_key,
    parse_address,
    resolve_client,
    resolve_scheme,
    wider_keys,
)

PROXIES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8:ffff::/48"))
OPEN = IdentityPolicy()
XFF = IdentityPolicy(trusted_proxies=PROXIES)
FWD = IdentityPolicy(trusted_proxies=PROXIES, header="forwarded")
C = "198.51.100.9"  # the real client in every proxied case
BAD = "400"


X, F = "x-forwarded-for", "forwarded"
SPOOFABLE = [X, "x-real-ip", F, "cf-connecting-ip", "true-client-ip", "x-client-ip",
             "x-cluster-client-ip", "fastly-client-ip", "x-originating-ip"]  # fmt: skip


def case(id: str, policy: IdentityPolicy, peer: str | None, headers: list[tuple[str, str]],
         key: str) -> object:  # fmt: skip
    """One spoofing case: the expected quota key, or BAD for a 400."""
    return pytest.param(policy, peer, headers, key, id=id)


# fmt: off
# A table reads best one case a line; the formatter would spread each over seven.
CASES = [
    *(case(f"no-trusted-proxy:{n}-is-ignored", OPEN, "203.0.113.7", [(n, "6.6.6.6")],
           "203.0.113.7") for n in SPOOFABLE),
    case("no-trusted-proxy:rfc7239-syntax-is-ignored", OPEN, "203.0.113.7",
         [(F, "for=6.6.6.6;proto=https")], "203.0.113.7"),
    case("no-trusted-proxy:every-header-at-once-is-ignored", OPEN, "203.0.113.7",
         [(n, "6.6.6.6") for n in SPOOFABLE], "203.0.113.7"),
    case("no-trusted-proxy:garbage-in-headers-is-ignored-not-400", OPEN, "203.0.113.7",
         [(X, "garbage"), (F, 'for="')], "203.0.113.7"),
    case("untrusted-peer:forwarded-headers-are-ignored", XFF, "198.51.100.77",
         [(X, "10.0.0.1, 6.6.6.6")], "198.51.100.77"),
    case("untrusted-peer-just-outside-trusted-range:headers-ignored", XFF, "11.0.0.1",
         [(X, "6.6.6.6")], "11.0.0.1"),
    case("untrusted-peer:rfc7239-forwarded-ignored", FWD, "198.51.100.77",
         [(F, "for=6.6.6.6")], "198.51.100.77"),
    case("trusted-proxy:appended-address-is-the-client", XFF, "10.0.0.5", [(X, C)], C),
    case("trusted-proxy:client-prepended-fakes-are-skipped", XFF, "10.0.0.5",
         [(X, f"1.1.1.1, 2.2.2.2, {C}")], C),
    case("trusted-proxy:client-prepended-trusted-looking-fake-is-skipped", XFF, "10.0.0.5",
         [(X, f"10.9.9.9, {C}")], C),
    case("trusted-proxy:client-prepended-garbage-left-of-real-hop-is-never-read", XFF,
         "10.0.0.5", [(X, f"garbage, unknown, {C}")], C),
    case("trusted-proxy:multiple-xff-instances-are-joined-in-order", XFF, "10.0.0.5",
         [(X, "6.6.6.6"), (X, C)], C),
    case("trusted-proxy:multiple-xff-instances-trusted-last", XFF, "10.0.0.5",
         [(X, f"6.6.6.6, {C}"), (X, "10.0.0.3")], C),
    case("trusted-proxy:header-name-case-does-not-matter", XFF, "10.0.0.5",
         [("X-Forwarded-For", C)], C),
    case("trusted-proxy:xff-hop-with-port", XFF, "10.0.0.5", [(X, f"{C}:5555")], C),
    case("trusted-proxy:xff-bracketed-ipv6-with-port-keyed-by-64", XFF, "10.0.0.5",
         [(X, "[2001:db8:5:6::1]:4711")], "2001:db8:5:6::/64"),
    case("trusted-proxy:xff-ipv4-mapped-is-ipv4", XFF, "10.0.0.5", [(X, f"::ffff:{C}")], C),
    case("trusted-proxy:empty-list-elements-are-skipped", XFF, "10.0.0.5",
         [(X, f"6.6.6.6,, {C} , ,")], C),
    case("trusted-proxy:other-spoofable-headers-never-change-the-key", XFF, "10.0.0.5",
         [(n, "6.6.6.6") for n in SPOOFABLE if n != X] + [(X, C)], C),
    case("trusted-proxy:no-forwarded-header-means-the-proxy-itself", XFF, "10.0.0.5",
         [("x-real-ip", "6.6.6.6")], "10.0.0.5"),
    case("two-trusted-proxies:walk-past-both", XFF, "10.0.0.1",
         [(X, f"6.6.6.6, {C}, 10.0.0.2")], C),
    case("two-trusted-proxies:ipv6-proxy-then-ipv4-proxy", XFF, "10.0.0.1",
         [(X, f"6.6.6.6, {C}, 2001:db8:ffff::2")], C),
    case("two-trusted-proxies:ipv6-peer", XFF, "2001:db8:ffff::1", [(X, f"{C}, 10.0.0.2")], C),
    case("all-hops-trusted:leftmost-hop-is-the-client", XFF, "10.0.0.1",
         [(X, "10.0.0.3, 10.0.0.2")], "10.0.0.3"),
    case("trusted-proxy-as-ipv4-mapped-peer-is-still-trusted", XFF, "::ffff:10.0.0.5",
         [(X, C)], C),
    case("trusted-proxy-configured-as-mapped-ipv6-network",
         IdentityPolicy(trusted_proxies=(ipaddress.ip_network("::ffff:10.0.0.0/104"),)),
         "10.0.0.5", [(X, C)], C),
    case("garbage-hop-reached:400", XFF, "10.0.0.5", [(X, "garbage")], BAD),
    case("unknown-hop-reached:400", XFF, "10.0.0.5", [(X, "unknown")], BAD),
    case("garbage-right-of-client-reached-first:400-not-the-proxy-key", XFF, "10.0.0.5",
         [(X, f"{C}, garbage")], BAD),
    case("hostname-hop-reached:400", XFF, "10.0.0.5", [(X, "example.com")], BAD),
    case("inet-aton-shorthand-hop:400", XFF, "10.0.0.5", [(X, "127.1")], BAD),
    case("forwarded:plain-for", FWD, "10.0.0.5", [(F, f"for={C}")], C),
    case("forwarded:quoted-ipv6-with-port", FWD, "10.0.0.5",
         [(F, 'for="[2001:db8:cafe::17]:4711"')], "2001:db8:cafe::/64"),
    case("forwarded:quoted-ipv4-with-port", FWD, "10.0.0.5", [(F, f'for="{C}:4711"')], C),
    case("forwarded:obfuscated-port-still-gives-the-address", FWD, "10.0.0.5",
         [(F, f'for="{C}:_abc"')], C),
    case("forwarded:parameter-name-is-case-insensitive", FWD, "10.0.0.5",
         [(F, f"proto=https;For={C};by=10.0.0.5")], C),
    case("forwarded:client-prepended-fake-elements-are-skipped", FWD, "10.0.0.5",
         [(F, f'for=6.6.6.6;proto=http, for="[::1]", for={C};proto=https')], C),
    case("forwarded:multiple-instances-joined-in-order", FWD, "10.0.0.5",
         [(F, "for=6.6.6.6"), (F, f"for={C}")], C),
    case("forwarded:two-trusted-proxies", FWD, "10.0.0.1",
         [(F, f'for={C}, for="[2001:db8:ffff::2]:80";by=10.0.0.1')], C),
    case("forwarded:quoted-comma-does-not-split-elements", FWD, "10.0.0.5",
         [(F, f'for={C};ext="x, for=6.6.6.6"')], C),
    case("forwarded:escaped-quote-inside-quoted-string", FWD, "10.0.0.5",
         [(F, f'for={C};ext="a\\", for=6.6.6.6"')], C),
    case("forwarded:quoted-pair-in-for-value-is-unescaped", FWD, "10.0.0.5",
         [(F, 'for="198.51.100.\\9"')], C),
    case("forwarded:unterminated-quote-in-earlier-instance-does-not-leak", FWD, "10.0.0.5",
         [(F, 'for="6.6.6.6'), (F, f"for={C}")], C),
    case("forwarded:unterminated-quote-swallowing-proxy-element:400", FWD, "10.0.0.5",
         [(F, f'for="6.6.6.6, for={C}')], BAD),
    case("forwarded:obfuscated-node-reached:400", FWD, "10.0.0.5", [(F, "for=_hidden")], BAD),
    case("forwarded:unknown-node-reached:400", FWD, "10.0.0.5", [(F, "for=unknown")], BAD),
    case("forwarded:element-without-for-reached:400", FWD, "10.0.0.5",
         [(F, "proto=https")], BAD),
    case("forwarded:duplicate-for-in-one-element:400", FWD, "10.0.0.5",
         [(F, f"for=6.6.6.6;for={C}")], BAD),
    case("forwarded:empty-for-value:400", FWD, "10.0.0.5", [(F, 'for=""')], BAD),
    case("forwarded-policy:x-forwarded-for-is-ignored", FWD, "10.0.0.5",
         [(X, "6.6.6.6"), (F, f"for={C}")], C),
    case("forwarded-policy:x-forwarded-for-alone-means-the-proxy-itself", FWD, "10.0.0.5",
         [(X, "6.6.6.6")], "10.0.0.5"),
    case("xff-policy:rfc7239-forwarded-is-ignored", XFF, "10.0.0.5",
         [(F, "for=6.6.6.6"), (X, C)], C),
    case("peer:none:400", OPEN, None, [], BAD),
    case("peer:empty:400", OPEN, "", [], BAD),
    case("peer:blank:400", OPEN, "   ", [], BAD),
    case("peer:garbage:400", OPEN, "garbage", [], BAD),
    case("peer:too-many-octets:400", OPEN, "1.2.3.4.5", [], BAD),
    case("peer:garbage-behind-trusted-policy:400", XFF, "garbage", [(X, C)], BAD),
]
# fmt: on


@pytest.mark.parametrize(("policy", "peer", "headers", "key"), CASES)
def test_spoofing_case_resolves_to_the_expected_key(
    policy: IdentityPolicy, peer: str | None, headers: list[tuple[str, str]], key: str
) -> None:
    """Each spoofing case gives exactly the expected key, or a 400 bad_client_address."""
    if key == BAD:
        with pytest.raises(RequestError) as info:
            resolve_client(peer, headers, policy)
        assert (info.value.status, info.value.code) == (400, "bad_client_address")
    else:
        assert resolve_client(peer, headers, policy).key == key


@pytest.mark.parametrize(
    "text",
    [
        "203.0.113.7",
        " 203.0.113.7 ",
        "203.0.113.7:443",
        "203.000.113.007",
        "::ffff:203.0.113.7",
        "::FFFF:CB00:7107",
        "0:0:0:0:0:ffff:cb00:7107",
        "[::ffff:203.0.113.7]:8080",
        "::ffff:203.000.113.007",
    ],
)
def test_ipv4_text_variants_give_one_address_and_key(text: str) -> None:
    """Ports, leading zeros, IPv4-mapped IPv6 in any case and spacing all read as 203.0.113.7."""
    client = resolve_client(text, [], OPEN)
    assert client == Client(ipaddress.IPv4Address("203.0.113.7"), "203.0.113.7")


def test_leading_zeros_are_decimal_not_octal() -> None:
    """010.001.002.003 is 10.1.2.3 (decimal), not 8.1.2.3 as inet_aton's octal would read it."""
    assert parse_address("010.001.002.003") == ipaddress.IPv4Address("10.1.2.3")


@pytest.mark.parametrize(
    "text",
    [
        "2001:db8:1:2::7",
        "2001:DB8:1:2::7",
        "2001:0db8:0001:0002:0000:0000:0000:0007",
        "[2001:db8:1:2::7]",
        "[2001:db8:1:2::7]:443",
        "2001:db8:1:2::7%eth0",
        "[2001:db8:1:2::7%25eth0]:443",
        "\t2001:db8:1:2::7\n",
    ],
)
def test_ipv6_text_variants_give_one_address_and_key(text: str) -> None:
    """Case, zero compression, brackets, ports, zone ids and whitespace do not change the key."""
    client = resolve_client(text, [], OPEN)
    assert client == Client(ipaddress.IPv6Address("2001:db8:1:2::7"), "2001:db8:1:2::/64")


@pytest.mark.parametrize(
    "text",
    [
        "127.1",
        "0x7f.0.0.1",
        "2130706433",
        "1.2.3.4:99999",
        "1.2.3.4:",
        "1.2.3.0004",
        "1.2.3.256",
        "1.2.3.-1",
        "1.2.3.4%eth0",
        "[1.2.3.4]",
        "[::1",
        "[::1]x",
        "::ffff:1.2.3",
        "1_0.1.2.3",
        "\u0661.2.3.4",
        "_hidden",
        "unknown",
        "1.2.3.4" + " " * 300 + "x",
        "1" * 10_000,
    ],
)
def test_unparseable_address_is_a_400(text: str) -> None:
    """Shorthands, out-of-range parts, non-ASCII digits, obfuscated nodes and junk are 400s."""
    with pytest.raises(RequestError) as info:
        parse_address(text)
    assert (info.value.status, info.value.code) == (400, "bad_client_address")


def test_bad_address_error_never_echoes_the_input() -> None:
    """The public detail is a fixed sentence: nothing the client sent is reflected."""
    with pytest.raises(RequestError) as info:
        parse_address("<script>alert(1)</script>")
    assert info.value.detail == "client address could not be determined"
    assert "script" not in str(info.value)


def test_a_thousand_addresses_in_one_ipv6_64_share_one_key() -> None:
    """1000 random addresses inside 2001:db8:1:2::/64 all map to one quota key."""
    rng = random.Random(64)
    base = int(ipaddress.IPv6Address("2001:db8:1:2::"))
    keys = {
        resolve_client(str(ipaddress.IPv6Address(base | rng.getrandbits(64))), [], OPEN).key
        for _ in range(1000)
    }
    assert keys == {"2001:db8:1:2::/64"}


def test_addresses_in_different_ipv6_64s_get_different_keys() -> None:
    """1000 addresses in 1000 distinct /64s get 1000 distinct keys."""
    rng = random.Random(65)
    nets = rng.sample(range(1 << 32), 1000)
    keys = {
        resolve_client(str(ipaddress.IPv6Address((0x20010DB8 << 96) | (n << 64) | 1)), [], OPEN).key
        for n in nets
    }
    assert len(keys) == 1000


def test_ipv6_prefix_is_configurable() -> None:
    """ipv6_prefix=48 keys by the /48; ipv6_prefix=128 keys by the bare address."""
    addr = "2001:db8:1:2::7"
    assert resolve_client(addr, [], IdentityPolicy(ipv6_prefix=48)).key == "2001:db8:1::/48"
    assert resolve_client(addr, [], IdentityPolicy(ipv6_prefix=128)).key == "2001:db8:1:2::7"


def test_ipv4_prefix_is_configurable() -> None:
    """ipv4_prefix=24 keys by the /24 in "<net>/<prefix>" form, on the fast path's input too."""
    policy = IdentityPolicy(ipv4_prefix=24)
    assert resolve_client("198.51.100.9", [], policy).key == "198.51.100.0/24"
    assert resolve_client("198.51.100.200", [], policy).key == "198.51.100.0/24"


def test_network_key_returns_the_covering_network() -> None:
    """network_key gives the /prefix network of an IPv4 or IPv6 address."""
    v4, v6 = ipaddress.IPv4Address("198.51.100.9"), ipaddress.IPv6Address("2001:db8:1:2::7")
    assert network_key(v4, 24, 64) == ipaddress.IPv4Network("198.51.100.0/24")
    assert network_key(v6, 24, 56) == ipaddress.IPv6Network("2001:db8:1::/56")


SECRET = b"s3cret-key-material"
HASHED = IdentityPolicy(key_secret=SECRET)


def test_hmac_key_is_hmac_sha256_of_the_network_text() -> None:
    """With key_secret the key is "h:" + the first 32 hex chars of HMAC-SHA256(secret, text)."""
    expected = hmac.new(SECRET, b"2001:db8:1:2::/64", hashlib.sha256).hexdigest()[:32]
    assert resolve_client("2001:db8:1:2::7", [], HASHED).key == "h:" + expected
    expected4 = hmac.new(SECRET, b"198.51.100.9", hashlib.sha256).hexdigest()[:32]
    assert resolve_client("198.51.100.9", [], HASHED).key == "h:" + expected4


def test_hmac_keys_are_stable_and_do_not_contain_the_address() -> None:
    """The same address gives the same key across policies; no address form appears in it."""
    first = resolve_client("198.51.100.9", [], HASHED)
    again = resolve_client(" ::ffff:198.51.100.9 ", [], IdentityPolicy(key_secret=SECRET))
    assert first.key == again.key
    assert first.address == ipaddress.IPv4Address("198.51.100.9")  # raw address kept for audit
    assert "198.51.100.9" not in first.key
    assert "c6336409" not in first.key  # the address as hex
    assert first.key.startswith("h:")
    assert len(first.key) == 34
    assert set(first.key[2:]) <= set("0123456789abcdef")


def test_hmac_keys_differ_by_secret_and_by_network() -> None:
    """Another secret or another network gives another key; one /64 still shares one."""
    other = IdentityPolicy(key_secret=b"another-secret")
    assert resolve_client("198.51.100.9", [], HASHED).key != resolve_client("198.51.100.9", [], other).key
    assert resolve_client("198.51.100.9", [], HASHED).key != resolve_client("198.51.100.8", [], HASHED).key
    assert (
        resolve_client("2001:db8:1:2::7", [], HASHED).key
        == resolve_client("2001:db8:1:2:ffff::1", [], HASHED).key
    )


def test_wider_keys_give_the_56_and_48_of_an_ipv6_client() -> None:
    """wider_keys lists the /56 and /48 keys in the same format as Client.key."""
    client = resolve_client("2001:db8:1:2::7", [], OPEN)
    assert wider_keys(client, [56, 48]) == ["2001:db8:1::/56", "2001:db8:1::/48"]


def test_wider_keys_share_one_56_across_its_64s() -> None:
    """Two clients in different /64s of one /56 get different keys but the same /56 key."""
    a = resolve_client("2001:db8:1:2::7", [], OPEN)
    b = resolve_client("2001:db8:1:ff::7", [], OPEN)
    assert a.key != b.key
    assert wider_keys(a, [56]) == wider_keys(b, [56])
    assert wider_keys(a, [64]) == [a.key]


def test_wider_keys_are_empty_for_ipv4_clients() -> None:
    """An IPv4 client has no wider IPv6 caps."""
    assert wider_keys(resolve_client("198.51.100.9", [], OPEN), [56, 48]) == []


def test_wider_keys_follow_the_hmac_rule() -> None:
    """With the secret, wider keys are HMACs of the wider network text."""
    client = resolve_client("2001:db8:1:2::7", [], HASHED)
    expected = "h:" + hmac.new(SECRET, b"2001:db8:1::/56", hashlib.sha256).hexdigest()[:32]
    assert wider_keys(client, [56], key_secret=SECRET) == [expected]


def test_wider_keys_refuse_a_secret_mismatch() -> None:
    """A hashed client key without the secret, or a plain one with it, is a ConfigurationError."""
    with pytest.raises(ConfigurationError):
        wider_keys(resolve_client("2001:db8::1", [], HASHED), [56])
    with pytest.raises(ConfigurationError):
        wider_keys(resolve_client("2001:db8::1", [], OPEN), [56], key_secret=SECRET)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"ipv4_prefix": 33}, "ipv4_prefix"),
        ({"ipv4_prefix": -1}, "ipv4_prefix"),
        ({"ipv4_prefix": True}, "ipv4_prefix"),
        ({"ipv6_prefix": 129}, "ipv6_prefix"),
        ({"ipv6_prefix": "64"}, "ipv6_prefix"),
        ({"header": "x-real-ip"}, "header"),
        ({"key_secret": b""}, "key_secret"),
        ({"key_secret": "text"}, "key_secret"),
        ({"trusted_proxies": ("10.0.0.0/8",)}, "trusted_proxies"),
    ],
)
def test_invalid_policy_is_a_configuration_error_naming_the_key(kwargs: dict[str, object], key: str) -> None:
    """Out-of-range prefixes, an unknown header, an empty secret or a text network are refused."""
    with pytest.raises(ConfigurationError) as info:
        IdentityPolicy(**kwargs)  # type: ignore[arg-type]
    assert info.value.key == key


def test_configuration_error_never_shows_the_secret() -> None:
    """A refused key_secret is not echoed in the error."""
    with pytest.raises(ConfigurationError) as info:
        IdentityPolicy(key_secret="do-not-print")  # type: ignore[arg-type]
    assert "do-not-print" not in str(info.value)
    assert info.value.value is None


@pytest.mark.parametrize(("v4", "v6"), [(33, 64), (32, 129), (-1, 64), (32, -5)])
def test_network_key_and_wider_keys_validate_prefixes(v4: int, v6: int) -> None:
    """Prefixes outside 0-32 / 0-128 are a ConfigurationError wherever they are passed."""
    with pytest.raises(ConfigurationError):
        network_key(ipaddress.IPv4Address("1.2.3.4"), v4, v6)
    if not 0 <= v6 <= 128:
        with pytest.raises(ConfigurationError):
            wider_keys(resolve_client("2001:db8::1", [], OPEN), [v6])


def test_zero_prefixes_key_everyone_together() -> None:
    """Prefix 0 is allowed and puts every address of that family under one key."""
    policy = IdentityPolicy(ipv4_prefix=0, ipv6_prefix=0)
    assert resolve_client("198.51.100.9", [], policy).key == "0.0.0.0/0"
    assert resolve_client("2001:db8::1", [], policy).key == "::/0"


def test_trusted_proxies_list_is_frozen_into_a_tuple() -> None:
    """A list of networks is accepted and stored as a tuple, keeping the policy hashable."""
    policy = IdentityPolicy(trusted_proxies=[ipaddress.ip_network("10.0.0.0/8")])  # type: ignore[arg-type]
    assert policy.trusted_proxies == (ipaddress.ip_network("10.0.0.0/8"),)
    assert hash(policy) == hash(IdentityPolicy(trusted_proxies=(ipaddress.ip_network("10.0.0.0/8"),)))


P = "x-forwarded-proto"
# fmt: off
SCHEME_CASES = [
    pytest.param("http", OPEN, "203.0.113.7", [(P, "https")], "http",
                 id="no-trusted-proxy:forwarded-proto-is-ignored"),
    pytest.param("https", OPEN, "203.0.113.7", [(P, "http")], "https",
                 id="no-trusted-proxy:the-connection-scheme-counts"),
    pytest.param("http", XFF, "198.51.100.77", [(X, C), (P, "https")], "http",
                 id="untrusted-peer:forwarded-proto-is-ignored"),
    pytest.param("http", XFF, "10.0.0.5", [(X, C), (P, "https")], "https",
                 id="trusted-proxy:its-proto-for-the-client-hop"),
    pytest.param("http", XFF, "10.0.0.5", [(X, f"6.6.6.6, {C}"), (P, "https")], "https",
                 id="trusted-proxy:client-prepended-hops-do-not-shift-the-proto"),
    pytest.param("http", XFF, "10.0.0.5", [(X, f"{C}, 10.0.0.9"), (P, "https, http")], "https",
                 id="two-trusted-hops:the-outer-proxy-entry-counts"),
    pytest.param("http", XFF, "10.0.0.5", [(X, f"{C}, 10.0.0.9"), (P, "https")], "http",
                 id="two-trusted-hops:no-entry-for-the-client-hop-means-the-connection"),
    pytest.param("http", XFF, "10.0.0.5", [(X, C), (P, "gopher")], "http",
                 id="trusted-proxy:unknown-proto-means-the-connection"),
    pytest.param("http", XFF, "10.0.0.5", [(P, "https")], "http",
                 id="trusted-proxy:no-forwarded-for-means-the-peer-is-the-client"),
    pytest.param("http", XFF, "10.0.0.5", [(X, "garbage"), (P, "https")], "http",
                 id="trusted-proxy:unreadable-hop-means-the-connection-never-an-error"),
    pytest.param("http", XFF, "10.0.0.5", [(X, C), (F, "for=1.2.3.4;proto=https")], "http",
                 id="xff-mode:the-forwarded-header-is-ignored"),
    pytest.param("http", FWD, "10.0.0.5", [(F, f"for={C};proto=https")], "https",
                 id="forwarded:proto-of-the-client-element"),
    pytest.param("http", FWD, "10.0.0.5", [(F, f'for="{C}";proto="HTTPS", for=10.0.0.9;proto=http')],
                 "https", id="forwarded:quoted-and-case-insensitive-past-a-trusted-hop"),
    pytest.param("http", FWD, "10.0.0.5", [(F, f"for=6.6.6.6;proto=https, for={C};proto=http")], "http",
                 id="forwarded:a-client-written-element-is-never-reached"),
    pytest.param("http", FWD, "10.0.0.5", [(F, f"for={C}"), (P, "https")], "http",
                 id="forwarded-mode:x-forwarded-proto-is-ignored"),
]
# fmt: on


@pytest.mark.parametrize(("transport", "policy", "peer", "headers", "expected"), SCHEME_CASES)
def test_scheme_follows_the_trusted_proxy_rule(
    transport: str, policy: IdentityPolicy, peer: str, headers: list[tuple[str, str]], expected: str
) -> None:
    """The scheme comes from a forwarded header only behind a trusted proxy, read at the
    hop where the client-address walk stops; anything else is the connection's."""
    assert resolve_scheme(transport, peer, headers, policy) == expected

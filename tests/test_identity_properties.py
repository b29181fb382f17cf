"""Hypothesis properties of client identity: one address, one key; any text, at worst a 400."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from functools import partial
from typing import TypeVar

from hypothesis import example, given, settings
from hypothesis import strategies as st

from triggergate.errors import RequestError
from triggergate.identity import (
    Client,
    IdentityPolicy,
    network_key,
    parse_address,
    resolve_client,
    wider_keys,
)

PROXIES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8:ffff::/48"))
OPEN = IdentityPolicy()
XFF = IdentityPolicy(trusted_proxies=PROXIES)
FWD = IdentityPolicy(trusted_proxies=PROXIES, header="forwarded")
HASHED = IdentityPolicy(key_secret=b"k")
# Characters addresses and forwarded headers are made of, so generated junk is near-valid.
NEAR = st.text(alphabet='0123456789abcdefABCDEFxX:.[]%_,;="\\ \t-', max_size=60)
TEXT = st.one_of(st.text(max_size=80), NEAR)
V4 = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address)
# Leave out the IPv4-mapped range: those addresses are IPv4 by design.
V6 = st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address).filter(lambda a: a.ipv4_mapped is None)
PORT = st.integers(0, 65535)
T = TypeVar("T")
SPACE = st.sampled_from(["", " ", "\t", "  "])


def outcome(call: Callable[[], T]) -> T | RequestError:
    """What ``call`` returns, or the RequestError it raised; any other exception propagates."""
    try:
        return call()
    except RequestError as exc:
        return exc


@st.composite
def v4_variant(draw: st.DrawFn, address: ipaddress.IPv4Address) -> str:
    """Any accepted spelling of an IPv4 address."""
    octets = address.packed
    plain = ".".join(draw(st.sampled_from(["{}", "{:03}", "{:02}"])).format(o) for o in octets)
    hexed = f"{octets[0] << 8 | octets[1]:x}:{octets[2] << 8 | octets[3]:x}"
    prefix = draw(st.sampled_from(["::ffff:", "::FFFF:", "0:0:0:0:0:ffff:", "0000::ffff:"]))
    text = draw(st.sampled_from([plain, prefix + plain, prefix + hexed]))
    if ":" not in text and draw(st.booleans()):
        text = f"{text}:{draw(PORT)}"
    elif ":" in text and draw(st.booleans()):
        text = f"[{text}]:{draw(PORT)}" if draw(st.booleans()) else f"[{text}]"
    text = text.upper() if draw(st.booleans()) else text
    return draw(SPACE) + text + draw(SPACE)


@st.composite
def v6_variant(draw: st.DrawFn, address: ipaddress.IPv6Address) -> str:
    """Any accepted spelling of an IPv6 address."""
    text = draw(st.sampled_from([str(address), address.exploded]))
    text = text.upper() if draw(st.booleans()) else text
    zone = draw(st.sampled_from(["", "%eth0", "%25en1", "%1"]))
    form = draw(st.sampled_from(["bare", "brackets", "port"]))
    if form == "bare":
        text += zone
    elif form == "brackets":
        text = f"[{text}{zone}]"
    else:
        text = f"[{text}{zone}]:{draw(PORT)}"
    return draw(SPACE) + text + draw(SPACE)


@given(st.data(), V4)
def test_every_spelling_of_an_ipv4_address_gives_its_key(
    data: st.DataObject, address: ipaddress.IPv4Address
) -> None:
    """Ports, leading zeros, IPv4-mapped forms, case and spacing: one address, one key."""
    text = data.draw(v4_variant(address))
    assert resolve_client(text, [], OPEN) == Client(address, str(address))
    assert resolve_client(text, [], HASHED).key == resolve_client(str(address), [], HASHED).key


@given(st.data(), V6)
def test_every_spelling_of_an_ipv6_address_gives_its_key(
    data: st.DataObject, address: ipaddress.IPv6Address
) -> None:
    """Compression, case, brackets, ports, zone ids and spacing: one address, one /64 key."""
    text = data.draw(v6_variant(address))
    client = resolve_client(text, [], OPEN)
    assert client.address == address
    assert client.key == network_key(address, 32, 64).with_prefixlen


@given(st.data(), st.one_of(V4, V6))
def test_a_proxied_spelling_gives_the_same_key_as_a_direct_peer(
    data: st.DataObject, address: ipaddress.IPv4Address | ipaddress.IPv6Address
) -> None:
    """Through a trusted proxy (X-Forwarded-For or quoted Forwarded) the key is the direct one."""
    direct = resolve_client(str(address), [], OPEN)
    if XFF.trusts(address):
        return  # a trusted address is walked past, not keyed; covered by the table
    spell = v4_variant(address) if isinstance(address, ipaddress.IPv4Address) else v6_variant(address)
    text = data.draw(spell).strip()
    assert resolve_client("10.0.0.1", [("x-forwarded-for", f"6.6.6.6, {text}")], XFF) == direct
    quoted = text.replace("\\", "\\\\").replace('"', '\\"')
    assert resolve_client("10.0.0.1", [("forwarded", f'for="{quoted}";proto=https')], FWD) == direct


@given(V6, st.integers(0, 2**64 - 1))
def test_addresses_in_one_ipv6_64_share_one_key(address: ipaddress.IPv6Address, low: int) -> None:
    """Changing only the low 64 bits never changes the key (unless it leaves the mapped range)."""
    sibling = ipaddress.IPv6Address(int(address) >> 64 << 64 | low)
    if sibling.ipv4_mapped is not None:
        return
    assert resolve_client(str(sibling), [], OPEN).key == resolve_client(str(address), [], OPEN).key


@given(st.one_of(V4, V6), st.integers(0, 32), st.integers(0, 128))
def test_key_text_is_the_canonical_network_text(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, v4: int, v6: int
) -> None:
    """The key is str(address) at full length, else network_key(...).with_prefixlen."""
    net = network_key(address, v4, v6)
    expected = str(address) if net.prefixlen == net.max_prefixlen else net.with_prefixlen
    assert resolve_client(str(address), [], IdentityPolicy(ipv4_prefix=v4, ipv6_prefix=v6)).key == expected
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is None:
        assert wider_keys(Client(address, expected), [v6]) == [expected]


@given(TEXT)
@example("\x00")
@example("[::1]:")
@example("[]")
@example(":")
@example("::ffff:")
@example("1.2.3.4:_")
@example("%")
def test_any_text_is_an_address_or_a_400(text: str) -> None:
    """parse_address and resolve_client raise nothing but a 400 RequestError on any text."""
    address = outcome(lambda: parse_address(text))
    client = outcome(lambda: resolve_client(text, [], OPEN))
    if isinstance(address, RequestError):
        assert isinstance(client, RequestError)
        assert (address.status, address.code) == (400, "bad_client_address")
    else:
        v6 = network_key(address, 32, 64).with_prefixlen
        assert client == Client(address, str(address) if address.version == 4 else v6)


@settings(max_examples=300)
@given(st.lists(st.tuples(st.sampled_from(["x-forwarded-for", "forwarded", "x-real-ip"]), TEXT), max_size=4))
@example([("forwarded", 'for="')])
@example([("forwarded", 'for="\\')])
@example([("forwarded", ";;,,=")])
@example([("x-forwarded-for", ",")])
def test_any_forwarded_headers_give_a_client_or_a_400(headers: list[tuple[str, str]]) -> None:
    """Behind a trusted proxy, arbitrary forwarded header values raise nothing but a 400."""
    for policy in (XFF, FWD):
        result = outcome(partial(resolve_client, "10.0.0.1", headers, policy))
        if isinstance(result, RequestError):
            assert (result.status, result.code) == (400, "bad_client_address")
        else:
            assert isinstance(result, Client)


@given(TEXT, TEXT)
@example("garbage", "")
@example(" , ", "unknown")
def test_malformed_forwarded_values_never_fall_back_to_the_proxy_key(left: str, right: str) -> None:
    """The proxy's own key comes out only when every non-empty hop parsed as a trusted address.

    So no malformed value can map many clients onto the shared key of the proxy.
    """
    xff = f"{left},{right}"
    try:
        client = resolve_client("10.0.0.1", [("x-forwarded-for", xff)], XFF)
    except RequestError:
        return
    if client.key == "10.0.0.1":
        for hop in xff.split(","):
            assert not hop.strip() or XFF.trusts(parse_address(hop))


@given(V4)
def test_fast_path_agrees_with_the_general_path(address: ipaddress.IPv4Address) -> None:
    """A canonical IPv4 peer keys the same on the fast path as through parse_address."""
    for policy in (OPEN, HASHED):
        fast = resolve_client(str(address), [], policy)
        general = resolve_client(f" {address} ", [], policy)  # whitespace skips the fast path
        assert fast == general


BAD_XFF = st.sampled_from(["garbage", "unknown", "_hidden", "1.2.3", "127.1", "[::1", "::ffff:1.2"])
BAD_FWD = st.sampled_from(
    [
        "for=_hidden",
        "for=unknown",
        "proto=https",
        'for=""',
        "for=garbage",
        "for=1.2.3.4;for=5.6.7.8",
    ]
)


@given(TEXT, BAD_XFF, BAD_FWD)
def test_a_malformed_hop_written_last_is_a_400_whatever_came_before(
    left: str, bad_xff: str, bad_fwd: str
) -> None:
    """A malformed hop nearest the proxy is a 400 under both headers, never a fallback key."""
    xff = outcome(
        partial(
            resolve_client,
            "10.0.0.1",
            [("x-forwarded-for", left), ("x-forwarded-for", bad_xff)],
            XFF,
        )
    )
    fwd = outcome(partial(resolve_client, "10.0.0.1", [("forwarded", left), ("forwarded", bad_fwd)], FWD))
    assert isinstance(xff, RequestError)
    assert isinstance(fwd, RequestError)

"""Identity through the real app: spoofing, malformed forwarded values, IPv6, text variants."""

from __future__ import annotations

import ipaddress
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from tests.hardening.support import base_env, serving
from triggergate.settings import Settings
from triggergate.web.app import create_app

pytestmark = [pytest.mark.sqlite]

SPOOF_HEADERS = (
    "X-Forwarded-For",
    "X-Real-IP",
    "Forwarded",
    "CF-Connecting-IP",
    "True-Client-IP",
    "X-Client-IP",
    "X-Cluster-Client-IP",
    "Fastly-Client-IP",
    "X-Originating-IP",
    "X-Forwarded",
    "Forwarded-For",
    "X-ProxyUser-Ip",
)


@pytest.mark.slow
async def test_no_header_changes_the_key_without_a_trusted_proxy(tmp_path: Path) -> None:
    """Real server, no trusted proxy: every spoofing header, with any value, leaves the key
    at the peer address, and the fifth press with new fake headers is still refused."""
    with serving(tmp_path, base_env(tmp_path, TRIGGERGATE_PIPELINE="noop://")) as server:
        source = "127.0.3.1"
        transport = httpx.AsyncHTTPTransport(local_address=source)
        async with httpx.AsyncClient(transport=transport, timeout=10) as http:
            statuses = []
            for i, name in enumerate(SPOOF_HEADERS):
                fake = f"198.51.100.{i + 1}" if name != "Forwarded" else f"for=198.51.100.{i + 1}"
                quota = await http.get(f"{server.url}/quota", headers={name: fake})
                assert quota.status_code == 200
                assert quota.json()["client"] == source, name
                posted = await http.post(f"{server.url}/trigger", headers={name: fake})
                statuses.append(posted.status_code)
    assert Counter(statuses) == {202: 3, 429: len(SPOOF_HEADERS) - 3}


MALFORMED = (
    "garbage",
    "unknown",
    "1.2.3",
    "127.1",
    "0x7f.0.0.1",
    "2130706433",
    "1.2.3.4.5",
    "300.1.1.1",
    "_hidden",
    "::g",
    "1.2.3.4:99999",
    "[::1",
    "1.2.3.4, not-an-ip",
    "fe80::1::2",
    "1.2.3.4;for=5.6.7.8",
    "\u0661.2.3.4",
)


@pytest.mark.slow
async def test_malformed_forwarded_values_get_400_never_a_shared_key(tmp_path: Path) -> None:
    """Behind a trusted proxy, every malformed rightmost X-Forwarded-For hop is a 400 on
    /trigger and /quota: no request is charged to the proxy's or any shared key."""
    env = base_env(tmp_path, TRIGGERGATE_TRUSTED_PROXIES="127.0.0.1/32")
    with serving(tmp_path, env) as server:
        transport = httpx.AsyncHTTPTransport(local_address="127.0.0.1")
        async with httpx.AsyncClient(transport=transport, timeout=10) as http:
            for value in MALFORMED:
                headers = {"X-Forwarded-For": value.encode("utf-8")}
                posted = await http.post(f"{server.url}/trigger", headers=headers)
                quota = await http.get(f"{server.url}/quota", headers=headers)
                assert (posted.status_code, quota.status_code) == (400, 400), value
                assert posted.json()["error"] == "bad_client_address"
    assert not (tmp_path / "started.txt").exists()


# -- in-process app with chosen peer addresses (ASGI scope["client"]) --------------------------


def _settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "store": f"sqlite:///{tmp_path}/gate.db",
        "pipeline": "noop://",
        "notify": ["log://"],
        "state_dir": tmp_path / "state",
        "coalesce": False,
        "log_level": "WARNING",
        **overrides,
    }
    return Settings(**values)


async def test_a_thousand_addresses_in_one_ipv6_64_share_one_quota(tmp_path: Path) -> None:
    """1,000 distinct peers inside 2001:db8:1:2::/64 pressing once each: exactly 3 accepted
    (limit 3/7d), all keyed 2001:db8:1:2::/64; a peer in the next /64 is still accepted."""
    app = create_app(_settings(tmp_path))
    net = ipaddress.IPv6Network("2001:db8:1:2::/64")
    statuses: Counter[int] = Counter()
    async with app.router.lifespan_context(app):
        for i in range(1000):
            peer = str(net[(i * 7919 + 1) * 2**40 + i])
            transport = httpx.ASGITransport(app=app, client=(peer, 40000 + i))
            async with httpx.AsyncClient(transport=transport, base_url="http://gate") as http:
                statuses[(await http.post("/trigger")).status_code] += 1
                if i == 999:
                    assert (await http.get("/quota")).json()["client"] == "2001:db8:1:2::/64"
        other = httpx.ASGITransport(app=app, client=("2001:db8:1:3::5", 1))
        async with httpx.AsyncClient(transport=other, base_url="http://gate") as http:
            assert (await http.post("/trigger")).status_code == 202
    assert statuses == {202: 3, 429: 997}


def _v4_variants(draw: Any, address: ipaddress.IPv4Address) -> str:
    octets = [str(o) for o in address.packed]
    padded = ".".join(o.zfill(draw(st.integers(len(o), 3))) for o in octets)
    port = draw(st.integers(1, 65535))
    return draw(
        st.sampled_from(
            [
                str(address),
                padded,
                f"{address}:{port}",
                f"::ffff:{address}",
                f"::FFFF:{address}",
                f"[::ffff:{address}]:{port}",
                f"  {address}  ",
                f"0:0:0:0:0:ffff:{address}",
            ]
        )
    )


def _v6_variants(draw: Any, address: ipaddress.IPv6Address) -> str:
    port = draw(st.integers(1, 65535))
    return draw(
        st.sampled_from(
            [
                address.compressed,
                address.exploded,
                address.exploded.upper(),
                f"{address.compressed}%eth0",
                f"[{address.compressed}]:{port}",
                f"[{address.exploded}%25x]",
            ]
        )
    )


@st.composite
def variant(draw: Any) -> tuple[str, str]:
    """(address text variant, the key every variant of that address must get)."""
    if draw(st.booleans()):
        v4 = ipaddress.IPv4Address(draw(st.integers(0x01000000, 0xDFFFFFFF)))
        return _v4_variants(draw, v4), str(v4)
    v6 = ipaddress.IPv6Address(draw(st.integers(0x2000 << 112, (0x3FFF << 112) - 1)))
    key = str(ipaddress.IPv6Network((v6, 64), strict=False))
    return _v6_variants(draw, v6), key


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One app trusting 127.0.0.1 as a proxy, reached from 127.0.0.1."""
    app = create_app(_settings(tmp_path_factory.mktemp("variants"), trusted_proxies=["127.0.0.1/32"]))
    with TestClient(app, client=("127.0.0.1", 5000), raise_server_exceptions=False) as client:
        yield client


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(variant())
def test_address_text_variants_of_one_address_get_one_key(proxied: TestClient, case: Any) -> None:
    """Leading zeros, ports, IPv4-mapped, upper case, zone ids, brackets, spaces: one key."""
    text, key = case
    response = proxied.get("/quota", headers={"X-Forwarded-For": f"192.0.2.9, {text}"})
    assert response.status_code == 200, text
    assert response.json()["client"] == key


header_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters=","), max_size=60
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=header_text, forwarded=st.booleans())
def test_garbage_forwarded_text_is_400_never_500(proxied: TestClient, value: str, forwarded: bool) -> None:
    """Any text as the client hop: 200 with a key (it parsed) or 400, never a 5xx."""
    headers = {"X-Forwarded-For": value.encode("latin-1")}
    response = proxied.get("/quota", headers=headers)
    assert response.status_code in (200, 400), (value, response.status_code)
    if response.status_code == 400:
        assert response.json()["error"] == "bad_client_address"
    trigger = proxied.post("/trigger", headers=headers) if forwarded else None
    assert trigger is None or trigger.status_code in (202, 400, 429)

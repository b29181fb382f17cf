"""Client identity: which quota key a request is charged to (DESIGN.md "Identity").

The key is the transport peer address. Forwarded headers count only when the peer is
a trusted proxy, and are walked right to left past trusted hops: proxies append, so
everything left of the first untrusted hop is text the client chose. IPv6 clients are
keyed by their /64 (configurable), IPv4-mapped IPv6 is IPv4, ports and zone ids are
dropped. Anything unparseable is a 400, never a fallback onto a shared key.

The scheme the client used (``resolve_scheme``: for the session cookie's ``Secure`` and
for HSTS) follows the same rule: the transport's own, unless the peer is a trusted
proxy; then the one recorded for the hop the walk stops at.

Accepted address text: ``a.b.c.d`` (each octet 1-3 decimal digits, so ``010`` is ten,
never octal), ``a.b.c.d:port``, RFC 4291 IPv6 text in any case or compression (an
embedded IPv4 tail read as above), ``[v6]`` and ``[v6]:port``, ``%zone`` suffixes on IPv6, and
surrounding whitespace. Refused: ``inet_aton`` shorthands (``127.1``, ``0x7f.0.0.1``,
``2130706433``), RFC 7239 ``unknown`` and ``_obfuscated`` nodes, and anything else.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from triggergate.errors import ConfigurationError, RequestError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_V4, _V6 = ipaddress.IPv4Address, ipaddress.IPv6Address
_DIGITS = frozenset("0123456789")
_OBFPORT = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ._-")
_HEXTETS = struct.Struct(">4H")
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)  # RFC 9110 quoted-pair; linear, no backtracking
_MAX_TEXT = 200  # far longer than any address with port and zone id; bounds the work


@dataclass(frozen=True)
class IdentityPolicy:
    """How the client behind a request is found and keyed.

    ``trusted_proxies``: networks whose forwarded headers are believed (empty: none).
    ``ipv4_prefix``/``ipv6_prefix``: the network size one quota key covers.
    ``key_secret``: when set, keys are ``"h:" + HMAC-SHA256(secret, network text)[:32 hex]``
    so stored quota keys do not reveal addresses (the raw address stays in audit).
    ``header``: the forwarded header the trusted proxies write; the other is ignored.
    """

    trusted_proxies: tuple[IPNetwork, ...] = ()
    ipv4_prefix: int = 32
    ipv6_prefix: int = 64
    key_secret: bytes | None = None
    header: Literal["x-forwarded-for", "forwarded"] = "x-forwarded-for"
    _trusted_v4: tuple[ipaddress.IPv4Network, ...] = field(init=False, repr=False, compare=False)
    _trusted_v6: tuple[ipaddress.IPv6Network, ...] = field(init=False, repr=False, compare=False)
    _mac: hmac.HMAC | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_prefix("ipv4_prefix", self.ipv4_prefix, 32)
        _check_prefix("ipv6_prefix", self.ipv6_prefix, 128)
        if self.header not in ("x-forwarded-for", "forwarded"):
            message = f"header must be 'x-forwarded-for' or 'forwarded', not {self.header!r}"
            raise ConfigurationError(message, key="header", value=self.header)
        if self.key_secret is not None and not (isinstance(self.key_secret, bytes) and self.key_secret):
            raise ConfigurationError("key_secret must be non-empty bytes", key="key_secret")
        v4: list[ipaddress.IPv4Network] = []
        v6: list[ipaddress.IPv6Network] = []
        for net in self.trusted_proxies:
            if isinstance(net, ipaddress.IPv4Network):
                v4.append(net)
            elif isinstance(net, ipaddress.IPv6Network):
                # Addresses are read with IPv4-mapped IPv6 turned to IPv4; match that here.
                mapped = net.network_address.ipv4_mapped
                if net.prefixlen >= 96 and mapped is not None:
                    v4.append(ipaddress.IPv4Network((mapped, net.prefixlen - 96)))
                else:
                    v6.append(net)
            else:
                message = f"trusted_proxies entries must be IP networks, not {net!r}"
                raise ConfigurationError(message, key="trusted_proxies", value=net)
        object.__setattr__(self, "trusted_proxies", tuple(self.trusted_proxies))
        object.__setattr__(self, "_trusted_v4", tuple(v4))
        object.__setattr__(self, "_trusted_v6", tuple(v6))
        mac = None if self.key_secret is None else hmac.new(self.key_secret, None, hashlib.sha256)
        object.__setattr__(self, "_mac", mac)

    def trusts(self, address: IPAddress) -> bool:
        """Whether ``address`` is one of the trusted proxies."""
        nets = self._trusted_v4 if address.version == 4 else self._trusted_v6
        return any(address in net for net in nets)


@dataclass(frozen=True)
class Client:
    """A resolved client: the raw ``address`` (for audit) and the quota ``key``."""

    address: IPAddress
    key: str


def parse_address(text: str) -> IPAddress:
    """Read one address in any accepted text form (see the module docstring).

    Raises ``RequestError(400, "bad_client_address", ...)`` for anything else.
    """
    address = _parse(text) if isinstance(text, str) else None
    if address is None:
        raise _bad_address()
    return address


def resolve_client(peer: str | None, headers: Sequence[tuple[str, str]], policy: IdentityPolicy) -> Client:
    """The client a request is charged to.

    ``peer`` is the transport peer address (ASGI ``scope["client"][0]``; on Lambda,
    API Gateway's ``sourceIp``). ``headers`` are (lowercase name, value) pairs in
    arrival order, repeated headers kept. Only when the peer is trusted are the
    ``policy.header`` instances read, joined in order, with the peer appended; the
    walk goes right to left past trusted hops and the first untrusted hop is the
    client (every hop trusted: the leftmost). An unparseable hop reached by the walk
    is a 400. Raises ``RequestError`` (400) and nothing else.
    """
    if not isinstance(peer, str):
        raise _bad_address()
    if not policy.trusted_proxies:
        # Fast path for the common case: a canonical dotted quad needs no further reading.
        try:
            packed = socket.inet_pton(socket.AF_INET, peer)
        except (OSError, ValueError):
            pass
        else:
            if policy.ipv4_prefix == 32:
                a, b, c, d = packed
                return Client(_V4(packed), _finish(f"{a}.{b}.{c}.{d}", policy._mac))
    address = parse_address(peer)
    if policy.trusted_proxies and policy.trusts(address):
        address, _ = _walk(address, headers, policy)
    prefix = policy.ipv4_prefix if address.version == 4 else policy.ipv6_prefix
    return Client(address, _key(address, prefix, policy._mac))


def resolve_scheme(
    transport: str, peer: str | None, headers: Sequence[tuple[str, str]], policy: IdentityPolicy
) -> Literal["http", "https"]:
    """The scheme the client used to reach the first proxy we trust, or us.

    ``transport`` is the connection's own scheme (ASGI ``scope["scheme"]``). Only
    when the peer is a trusted proxy are forwarded headers read, walked exactly as
    :func:`resolve_client` walks them; the scheme is the one recorded at the hop
    the walk stops at, counted from the right: with ``forwarded``, that element's
    ``proto=``; with ``x-forwarded-for``, the ``X-Forwarded-Proto`` entry at the
    same position from the right (each proxy appends both, or the one proxy sets
    both). Anything missing, unreadable or other than http/https: ``transport``.
    Never raises.
    """
    own: Literal["http", "https"] = "https" if transport.lower() in ("https", "wss") else "http"
    if not policy.trusted_proxies or not isinstance(peer, str):
        return own
    address = _parse(peer)
    if address is None or not policy.trusts(address):
        return own
    try:
        _, depth = _walk(address, headers, policy)
    except RequestError:
        return own
    protos: list[str | None] = []
    for name, value in headers:
        name = name.lower()
        if policy.header == "forwarded" and name == "forwarded":
            protos.extend(_forwarded_param(value, "proto"))
        elif policy.header == "x-forwarded-for" and name == "x-forwarded-proto":
            protos.extend(value.split(","))
    if not 0 < depth <= len(protos):
        return own  # the peer itself is the client, or no proto was recorded for its hop
    proto = (protos[-depth] or "").strip().lower()
    if proto == "https":
        return "https"
    return "http" if proto == "http" else own


def network_key(address: IPAddress, prefix_v4: int, prefix_v6: int) -> IPNetwork:
    """The network one quota key covers: ``address``'s /prefix_v4 or /prefix_v6."""
    _check_prefix("ipv4_prefix", prefix_v4, 32)
    _check_prefix("ipv6_prefix", prefix_v6, 128)
    if isinstance(address, _V4):
        return ipaddress.IPv4Network((address, prefix_v4), strict=False)
    return ipaddress.IPv6Network((address, prefix_v6), strict=False)


def wider_keys(client: Client, prefixes_v6: Sequence[int], *, key_secret: bytes | None = None) -> list[str]:
    """Keys of the wider IPv6 networks (e.g. /56, /48) holding an IPv6 client, for wider caps.

    Same format and HMAC rule as ``Client.key``; pass the policy's ``key_secret``
    (a mismatch with how ``client.key`` was made is a ``ConfigurationError``).
    IPv4 clients get ``[]``.
    """
    if client.key.startswith("h:") != (key_secret is not None):
        raise ConfigurationError("wider_keys needs the key_secret that made the client key")
    for prefix in prefixes_v6:
        _check_prefix("ipv6_wider_prefixes", prefix, 128)
    if client.address.version == 4:
        return []
    mac = None if key_secret is None else hmac.new(key_secret, None, hashlib.sha256)
    return [_key(client.address, prefix, mac) for prefix in prefixes_v6]


def _key(address: IPAddress, prefix: int, mac: hmac.HMAC | None) -> str:
    bits = address.max_prefixlen
    if prefix == bits:
        text = str(address)
    elif bits == 128 and prefix <= 64:
        # The low 64 bits are zero, so RFC 5952 compresses them (and any zero hextets
        # just before) into "::"; formatting it here is several times cheaper than str().
        top = int(address) >> (128 - prefix) << (64 - prefix)
        a, b, c, d = _HEXTETS.unpack(top.to_bytes(8, "big"))
        text = f"{a:x}:{b:x}:{c:x}:{d:x}"
        while text.endswith(":0"):
            text = text[:-2]
        text = ("" if text == "0" else text) + f"::/{prefix}"
    else:
        text = f"{type(address)(int(address) >> (bits - prefix) << (bits - prefix))}/{prefix}"
    return _finish(text, mac)


def _finish(text: str, mac: hmac.HMAC | None) -> str:
    if mac is None:
        return text
    digest = mac.copy()
    digest.update(text.encode())
    return "h:" + digest.hexdigest()[:32]


def _walk(
    peer: IPAddress, headers: Sequence[tuple[str, str]], policy: IdentityPolicy
) -> tuple[IPAddress, int]:
    """The client, and its hop's position from the right (1: the last entry; 0: the peer)."""
    hops: list[str | None] = []
    for name, value in headers:
        if name.lower() == policy.header:
            hops.extend(_forwarded_param(value, "for") if policy.header == "forwarded" else value.split(","))
    client, at = peer, len(hops)
    for i in range(len(hops) - 1, -1, -1):
        hop = hops[i]
        if hop is None:
            raise _bad_address()
        if not hop.strip():
            continue  # empty list elements are ignored (RFC 9110 section 5.6.1)
        client, at = parse_address(hop), i
        if not policy.trusts(client):
            break
    return client, len(hops) - at


def _forwarded_param(value: str, param: str) -> list[str | None]:
    """The ``param`` (``for``, ``proto``) of each element of one RFC 7239 header value, in order.

    "" marks an empty element (skipped); None an element whose ``param`` is missing,
    repeated or badly quoted (for ``for``, a 400 if the walk reaches it).
    """
    if '"' not in value:
        return [_element_param(element.split(";"), param) for element in value.split(",")]
    found: list[str | None] = []
    pairs: list[str] = []
    start, i, quoted = 0, 0, False
    while i < len(value):
        char = value[i]
        if quoted:
            if char == "\\":
                i += 1  # quoted-pair: the next character is literal
            elif char == '"':
                quoted = False
        elif char == '"':
            quoted = True
        elif char in ",;":
            pairs.append(value[start:i])
            start = i + 1
            if char == ",":
                found.append(_element_param(pairs, param))
                pairs = []
        i += 1
    pairs.append(value[start:])
    found.append(None if quoted else _element_param(pairs, param))
    return found


def _element_param(pairs: list[str], param: str) -> str | None:
    node: str | None = None
    empty = True
    for pair in pairs:
        name, equals, raw = pair.partition("=")
        if not equals:
            if pair.strip():
                return None
            continue
        empty = False
        if name.strip().lower() == param:
            if node is not None:
                return None
            node = _unquote(raw.strip())
            if not node:
                return None
    return "" if empty else node


def _unquote(raw: str) -> str | None:
    if raw[:1] != '"':
        return raw
    if len(raw) < 2 or raw[-1] != '"':
        return None
    # The scanner only ends a pair outside quotes, so no escape can dangle here.
    return _QUOTED_PAIR.sub(r"\1", raw[1:-1])


def _parse(text: str) -> IPAddress | None:
    text = text.strip()
    if not text or len(text) > _MAX_TEXT:
        return None
    if text[0] == "[":
        end = text.find("]")
        rest = text[end + 1 :]
        if end < 0 or (rest and not (rest[0] == ":" and _is_port(rest[1:]))):
            return None
        return _parse_v6(text[1:end])
    colons = text.count(":")
    if colons == 0:
        return _parse_v4(text)
    if colons == 1:
        host, _, port = text.partition(":")
        return _parse_v4(host) if _is_port(port) else None
    return _parse_v6(text)


def _is_port(text: str) -> bool:
    if text[:1] == "_":  # an RFC 7239 obfuscated port: the address is still known
        return len(text) > 1 and _OBFPORT.issuperset(text)
    return 0 < len(text) <= 5 and _DIGITS.issuperset(text) and int(text) <= 65535


def _parse_v4(text: str) -> ipaddress.IPv4Address | None:
    try:
        return _V4(socket.inet_pton(socket.AF_INET, text))  # the canonical form, in C
    except (OSError, ValueError):
        pass
    parts = text.split(".")
    if len(parts) != 4:
        return None
    value = 0
    for part in parts:
        # isdigit() and int() alone would also take non-ASCII digits and "1_0".
        if not 0 < len(part) <= 3 or not _DIGITS.issuperset(part) or int(part) > 255:
            return None
        value = value << 8 | int(part)
    return _V4(value)


def _parse_v6(text: str) -> IPAddress | None:
    text = text.partition("%")[0]  # a zone id names a link, not a different host
    if "." in text:
        head, colon, tail = text.rpartition(":")
        tail_v4 = _parse_v4(tail)
        if not colon or tail_v4 is None:
            return None
        text = f"{head}:{tail_v4}"
    try:
        # inet_pton is strict (RFC 4291 text only) and several times faster than _V6(text).
        address = _V6(socket.inet_pton(socket.AF_INET6, text))
    except (OSError, ValueError):
        return None
    mapped = address.ipv4_mapped
    return address if mapped is None else mapped


def _check_prefix(key: str, prefix: object, bits: int) -> None:
    if isinstance(prefix, bool) or not isinstance(prefix, int) or not 0 <= prefix <= bits:
        message = f"{key} must be a whole number from 0 to {bits}, not {prefix!r}"
        raise ConfigurationError(message, key=key, value=prefix)


def _bad_address() -> RequestError:
    return RequestError(400, "bad_client_address", "client address could not be determined")

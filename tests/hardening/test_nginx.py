"""The shipped nginx example (deploy/nginx/triggergate.conf) as a real reverse proxy."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.hardening.support import base_env, serving
from tests.servers._process import free_port, require_binary, stop_pid, wait_for_port
from tests.servers.app import AppServer
from tests.servers.smtp import tls_files

pytestmark = [pytest.mark.slow, pytest.mark.sqlite]

EXAMPLE = Path(__file__).parents[2] / "deploy" / "nginx" / "triggergate.conf"
TIMEOUT_DIRECTIVES = ("client_header_timeout", "client_body_timeout", "send_timeout")


def _wrapper(prefix: Path, site: str) -> str:
    user = "user root;\n" if os.geteuid() == 0 else ""
    temps = "\n".join(
        f"    {kind}_temp_path {prefix}/{kind}_temp;"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        f"{user}worker_processes 1;\npid {prefix}/nginx.pid;\nerror_log {prefix}/error.log warn;\n"
        f"events {{ worker_connections 256; }}\nhttp {{\n    access_log off;\n{temps}\n"
        f"{site}\n}}\n"
    )


@dataclass(frozen=True)
class Proxied:
    """triggergate behind the example: nginx's plain and TLS addresses, the CA to trust."""

    http: str
    https: str
    ca: Path
    app: AppServer


@contextlib.contextmanager
def nginx_in_front(tmp_path: Path, **extra: str) -> Iterator[Proxied]:
    """triggergate (trusted_proxies=127.0.0.1/32, plus ``extra``) behind the example, with
    a throwaway CA's certificate for 127.0.0.1 on the TLS listener, timeouts cut to 1 s."""
    binary = require_binary("nginx")
    env = base_env(tmp_path, TRIGGERGATE_TRUSTED_PROXIES="127.0.0.1/32", **extra)
    env["TRIGGERGATE_PIPELINE"] = "noop://"
    tls = tls_files(tmp_path)
    with serving(tmp_path, env) as app:
        port, tls_port = free_port(), free_port()
        site = EXAMPLE.read_text()
        site = site.replace("server 127.0.0.1:8080;", f"server 127.0.0.1:{app.port};")
        site = site.replace("listen 80;", f"listen 127.0.0.1:{port};")
        site = site.replace("listen 443 ssl;", f"listen 127.0.0.1:{tls_port} ssl;")
        site = site.replace("/etc/ssl/triggergate/fullchain.pem", str(tls.cert))
        site = site.replace("/etc/ssl/triggergate/privkey.pem", str(tls.key))
        for directive in TIMEOUT_DIRECTIVES:  # the shipped 10 s, shortened for a quick test
            site = site.replace(f"{directive} 10s;", f"{directive} 1s;")
        conf = tmp_path / "nginx.conf"
        conf.write_text(_wrapper(tmp_path, site))
        proc = subprocess.Popen(
            [binary, "-p", str(tmp_path), "-c", str(conf), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port(port)
            wait_for_port(tls_port)
            yield Proxied(f"http://127.0.0.1:{port}", f"https://127.0.0.1:{tls_port}", tls.ca, app)
        finally:
            stop_pid(proc.pid, timeout=5)
            proc.wait(timeout=5)


@pytest.fixture
def behind_nginx(tmp_path: Path) -> Iterator[tuple[str, AppServer]]:
    """The example in front of triggergate; its plain-http address."""
    with nginx_in_front(tmp_path) as proxied:
        yield proxied.http, proxied.app


def test_the_example_configures_every_slow_client_defence() -> None:
    """The shipped file sets each timeout, the header buffers and a 4k body cap."""
    text = EXAMPLE.read_text()
    for directive in (*TIMEOUT_DIRECTIVES, "large_client_header_buffers", "server_tokens off"):
        assert re.search(rf"^\s*{directive}\b", text, re.M), directive
    assert re.search(r"^\s*client_max_body_size 4k;", text, re.M)
    assert "$proxy_add_x_forwarded_for" in text
    assert re.search(r"^\s*proxy_set_header X-Forwarded-Proto \$scheme;", text, re.M)


async def test_prepended_fake_forwarded_entries_change_nothing(
    behind_nginx: tuple[str, AppServer],
) -> None:
    """A client at 127.0.4.7 writing its own X-Forwarded-For/Forwarded/X-Real-IP through
    nginx is keyed 127.0.4.7 every time, and its fourth press is refused."""
    url, _ = behind_nginx
    transport = httpx.AsyncHTTPTransport(local_address="127.0.4.7")
    fakes = [
        {"X-Forwarded-For": "203.0.113.1"},
        {"X-Forwarded-For": "203.0.113.2, 198.51.100.3"},
        {"X-Forwarded-For": "127.0.0.1"},
        {"X-Real-IP": "203.0.113.9", "Forwarded": "for=203.0.113.9"},
    ]
    async with httpx.AsyncClient(transport=transport, timeout=10) as http:
        statuses = []
        for headers in fakes:
            quota = await http.get(f"{url}/quota", headers=headers)
            assert quota.json()["client"] == "127.0.4.7", headers
            statuses.append((await http.post(f"{url}/trigger", headers=headers)).status_code)
    assert statuses == [202, 202, 202, 429]


async def test_nginx_refuses_big_bodies_and_heads_and_hides_its_version(
    behind_nginx: tuple[str, AppServer],
) -> None:
    """A 5 KB body is 413 at nginx; a 9 KB header line is refused (400); no version shown."""
    url, _ = behind_nginx
    async with httpx.AsyncClient(timeout=10) as http:
        big = await http.post(f"{url}/trigger", content=b"{" + b" " * 5000 + b"}")
        assert big.status_code == 413
        head = await http.get(f"{url}/quota", headers={"X-Pad": "a" * 9000})
        assert head.status_code in (400, 431)
        ok = await http.get(f"{url}/healthz")
    assert ok.status_code == 200
    for response in (big, head, ok):
        assert re.fullmatch(r"nginx", response.headers.get("server", "nginx")), response.headers


def _read_until_closed(sock: socket.socket, limit: float) -> tuple[bytes, float]:
    start = time.monotonic()
    sock.settimeout(limit)
    data = b""
    while True:
        try:
            chunk = sock.recv(4096)
        except ConnectionResetError:  # reset_timedout_connection on: a RST, not a FIN
            chunk = b""
        if not chunk:
            return data, time.monotonic() - start
        data += chunk


def test_slow_header_and_slow_body_clients_are_cut_off(
    behind_nginx: tuple[str, AppServer],
) -> None:
    """A client that stops mid-head or mid-body is disconnected by nginx after its timeout
    (1 s here, 10 s shipped), and the server behind never sees a request."""
    url, app = behind_nginx
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as slow_head:
        slow_head.sendall(b"POST /trigger HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        _, waited = _read_until_closed(slow_head, 5)
    assert 0.8 < waited < 4
    with socket.create_connection(("127.0.0.1", port)) as slow_body:
        slow_body.sendall(
            b"POST /trigger HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{"
        )
        data, waited = _read_until_closed(slow_body, 5)
    assert 0.8 < waited < 4
    assert not data.startswith(b"HTTP/1.1 202")
    assert not (app.log.parent / "started.txt").exists()


TOKEN = "Qm3vT8yKc1pZr6WnX0aLd4sEh7uJf2gBiN5oV9tRwYe"


def _trust(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


async def test_over_tls_the_session_cookie_is_a_secure_host_cookie_with_hsts(tmp_path: Path) -> None:
    """Signed in through nginx's TLS listener, the cookie is __Host-, Secure, HttpOnly,
    Path=/ without Domain, and the answer carries HSTS; through the plain listener it is
    neither, even when the client writes X-Forwarded-Proto: https itself."""
    with nginx_in_front(tmp_path, TRIGGERGATE_ADMIN_TOKEN=TOKEN) as proxied:
        async with httpx.AsyncClient(verify=_trust(proxied.ca), timeout=10) as http:
            signed_in = await http.post(f"{proxied.https}/admin/login", data={"token": TOKEN})
            plain = await http.post(
                f"{proxied.http}/admin/login", data={"token": TOKEN}, headers={"X-Forwarded-Proto": "https"}
            )
    assert signed_in.status_code == 303
    cookie = signed_in.headers["set-cookie"]
    assert cookie.startswith("__Host-triggergate_admin=")
    assert all(part in cookie for part in ("Secure", "HttpOnly", "Path=/;", "SameSite=strict"))
    assert "Domain" not in cookie
    assert signed_in.headers["strict-transport-security"] == "max-age=31536000"
    assert plain.status_code == 303
    assert plain.headers["set-cookie"].startswith("triggergate_admin=")
    assert "Secure" not in plain.headers["set-cookie"]
    assert "strict-transport-security" not in plain.headers


async def test_behind_tls_a_signed_out_cookie_is_refused(tmp_path: Path) -> None:
    """A copy of the session cookie taken before signing out opens nothing afterwards."""
    with nginx_in_front(tmp_path, TRIGGERGATE_ADMIN_TOKEN=TOKEN) as proxied:
        async with httpx.AsyncClient(verify=_trust(proxied.ca), timeout=10) as http:
            signed_in = await http.post(f"{proxied.https}/admin/login", data={"token": TOKEN})
            name, _, rest = signed_in.headers["set-cookie"].partition("=")
            copied = {"cookie": f"{name}={rest.split(';')[0]}"}
            page = await http.get(f"{proxied.https}/admin", headers=copied)
            csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
            assert page.status_code == 200 and csrf is not None
            out = await http.post(f"{proxied.https}/admin/logout", data={"csrf": csrf[1]}, headers=copied)
            assert out.status_code == 303
        async with httpx.AsyncClient(verify=_trust(proxied.ca), timeout=10) as thief:
            after = await thief.get(f"{proxied.https}/admin", headers=copied)
    assert after.status_code == 401 and "Operator view" not in after.text


async def test_behind_nginx_metrics_follow_the_client_address_not_the_proxy(tmp_path: Path) -> None:
    """With metrics_allow=127.0.0.1/32, a client at 127.0.4.7 is refused through nginx
    (whose own address is allowed), and a client at 127.0.0.1 is served."""
    with nginx_in_front(tmp_path, TRIGGERGATE_METRICS_ALLOW="127.0.0.1/32") as proxied:
        outside = httpx.AsyncHTTPTransport(local_address="127.0.4.7", verify=_trust(proxied.ca))
        async with httpx.AsyncClient(transport=outside, timeout=10) as http:
            refused = await http.get(f"{proxied.https}/metrics")
        inside = httpx.AsyncHTTPTransport(local_address="127.0.0.1", verify=_trust(proxied.ca))
        async with httpx.AsyncClient(transport=inside, timeout=10) as http:
            served = await http.get(f"{proxied.https}/metrics")
    assert refused.status_code == 403 and refused.json()["error"] == "forbidden"
    assert served.status_code == 200 and "triggergate_decisions" in served.text

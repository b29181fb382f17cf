"""The shipped nginx example (deploy/nginx/triggergate.conf) as a real reverse proxy."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.hardening.support import base_env, serving
from tests.servers._process import free_port, require_binary, stop_pid, wait_for_port
from tests.servers.app import AppServer

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


@pytest.fixture
def behind_nginx(tmp_path: Path) -> Iterator[tuple[str, AppServer]]:
    """triggergate (trusted_proxies=127.0.0.1/32) behind the example, timeouts cut to 1 s."""
    binary = require_binary("nginx")
    env = base_env(tmp_path, TRIGGERGATE_TRUSTED_PROXIES="127.0.0.1/32")
    env["TRIGGERGATE_PIPELINE"] = "noop://"
    with serving(tmp_path, env) as app:
        port = free_port()
        site = EXAMPLE.read_text()
        site = site.replace("server 127.0.0.1:8080;", f"server 127.0.0.1:{app.port};")
        site = site.replace("listen 80;", f"listen 127.0.0.1:{port};")
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
            yield f"http://127.0.0.1:{port}", app
        finally:
            stop_pid(proc.pid, timeout=5)
            proc.wait(timeout=5)


def test_the_example_configures_every_slow_client_defence() -> None:
    """The shipped file sets each timeout, the header buffers and a 4k body cap."""
    text = EXAMPLE.read_text()
    for directive in (*TIMEOUT_DIRECTIVES, "large_client_header_buffers", "server_tokens off"):
        assert re.search(rf"^\s*{directive}\b", text, re.M), directive
    assert re.search(r"^\s*client_max_body_size 4k;", text, re.M)
    assert "$proxy_add_x_forwarded_for" in text


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

"""Oversized and malformed requests, and production-mode surface, against a real server."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.hardening.support import base_env, leaks, serving
from tests.servers.app import AppServer

pytestmark = [pytest.mark.slow, pytest.mark.sqlite]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    workdir = tmp_path_factory.mktemp("requests")
    env = base_env(workdir, TRIGGERGATE_PIPELINE="noop://")
    env["TRIGGERGATE_TEST_FAULTS"] = "before_response=raise@2"
    with serving(workdir, env) as running:
        yield running


def exchange(port: int, head: bytes, body_chunks: list[bytes] = (), pause: float = 0) -> bytes:  # type: ignore[assignment]
    """Send a head then chunks (pausing between), return what the server answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head)
        for chunk in body_chunks:
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(pause)
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
                if b"\r\n\r\n" in data:
                    break
        except (ConnectionResetError, TimeoutError):
            pass
        return data


def test_a_declared_huge_body_is_refused_before_it_is_sent(server: AppServer) -> None:
    """Content-Length: 10 MB with no body sent yet: 413 at once, nothing buffered."""
    started = time.monotonic()
    answer = exchange(
        server.port,
        b"POST /trigger HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 10485760\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 413"), answer[:80]
    assert time.monotonic() - started < 1


def test_a_chunked_body_is_cut_off_after_4_kib(server: AppServer) -> None:
    """A chunked body of 1 KiB chunks: the 413 arrives once just over 4 KiB were read,
    while the client still had 1 MiB to send."""
    chunk = b"400\r\n" + b" " * 1024 + b"\r\n"
    answer = exchange(
        server.port,
        b"POST /trigger HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n",
        [chunk] * 1024,
        pause=0.002,
    )
    assert answer.startswith(b"HTTP/1.1 413"), answer[:80]


@pytest.mark.parametrize("size", [9_000, 70_000, 2_000_000])
def test_huge_headers_get_431(server: AppServer, size: int) -> None:
    """9 KB (whole head, app check), 70 KB and 2 MB (server-level bound): 431, never 200."""
    answer = exchange(server.port, b"GET /quota HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * size + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 431"), answer[:80]


def test_a_huge_url_gets_414(server: AppServer) -> None:
    """A 6 KB query string is refused with 414 before any route runs."""
    answer = exchange(server.port, b"GET /quota?" + b"a" * 6000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 414"), answer[:80]


async def test_production_mode_shows_no_banner_debug_page_or_traceback(server: AppServer) -> None:
    """No Server header on any answer, no debug or docs pages, and an unexpected error
    (an injected exception after a run started) is a JSON 500 without internal text."""
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        answers = [
            await http.get(path)
            for path in ("/", "/healthz", "/nope", "/docs", "/redoc", "/__debug__", "/.env")
        ]
        answers.append(await http.request("TRACE", "/trigger"))
        answers.append(await http.post("/trigger"))  # first pass of before_response: fine
        crashed = await http.post("/trigger")  # second pass: InjectedFault
        answers.append(crashed)
    # uvicorn closes a connection whose app raised; the server itself lives on.
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        answers.append(await http.get("/healthz"))
    assert crashed.status_code == 500
    assert set(crashed.json()) == {"error", "detail", "request_id"}
    for answer in answers:
        assert "server" not in answer.headers, answer.headers
        assert answer.status_code < 500 or answer is crashed
        text = answer.text
        assert not leaks(text), (answer.url, leaks(text))
        for word in ("uvicorn", "starlette", "Traceback", "InjectedFault", "fault injected"):
            assert word not in text and word not in str(answer.headers)
        if answer.status_code >= 400:
            assert json.loads(text)["error"]
    assert answers[-1].status_code == 200

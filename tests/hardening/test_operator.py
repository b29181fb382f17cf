"""The operator surface against a real ``triggergate serve``: guessing the admin token,
weak tokens, and who may read /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from tests.hardening.support import audits, base_env, db, raw_request, serving
from tests.servers._process import free_port
from tests.servers.webhook import webhook_server

pytestmark = [pytest.mark.slow]

TOKEN = "Qm3vT8yKc1pZr6WnX0aLd4sEh7uJf2gBiN5oV9tRwYe"


def _login(token: str) -> bytes:
    body = f"token={quote(token)}".encode()
    head = (
        "POST /admin/login HTTP/1.1\r\nHost: gate\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _rows(workdir: Path) -> dict[str, int]:
    """Rows per table, the denial summaries the background loop writes apart."""
    with contextlib.closing(db(workdir)) as conn:
        counts = {
            table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608 - our names
            for table in ("quota", "ledger", "outbox")
        }
        records = conn.execute("SELECT kind, doc FROM records").fetchall()
    counts["records"] = sum(1 for kind, doc in records if json.loads(doc).get("event") != "denied")
    return counts


def _quota_keys(workdir: Path) -> dict[str, int]:
    with contextlib.closing(db(workdir)) as conn:
        return dict(conn.execute("SELECT key, count(*) FROM quota GROUP BY key").fetchall())


async def _sequential(port: int, source: str, requests: list[bytes]) -> list[tuple[int, bytes]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        return [await raw_request(reader, writer, request) for request in requests]
    finally:
        writer.close()


async def _concurrent(port: int, source: str, requests: list[bytes], connections: int) -> list[int]:
    """Every request, in order of the list, spread over ``connections`` kept-alive sockets."""
    queue: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
    for item in enumerate(requests):
        queue.put_nowait(item)
    statuses = [0] * len(requests)

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        try:
            while not queue.empty():
                i, request = queue.get_nowait()
                statuses[i] = (await raw_request(reader, writer, request))[0]
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return statuses


@pytest.mark.sqlite
async def test_a_thousand_wrong_tokens_get_ten_401s_then_429s_writing_only_the_limit(tmp_path: Path) -> None:
    """1,000 wrong tokens from one client: 10 answers of 401, then 990 of 429 with
    Retry-After and the safe body. The store gains exactly the ten charged attempts
    (per client and global), nothing else; the denial summary counts all 1,000."""
    env = base_env(tmp_path, TRIGGERGATE_ADMIN_TOKEN=TOKEN)
    with serving(tmp_path, env) as app:
        before = _rows(tmp_path)
        answers = await _sequential(app.port, "127.0.0.7", [_login(f"wrong-{i}") for i in range(1000)])
        after = _rows(tmp_path)
        keys = _quota_keys(tmp_path)
    assert [status for status, _ in answers] == [401] * 10 + [429] * 990
    refused = json.loads(answers[-1][1])
    assert set(refused) == {"error", "detail", "request_id"} and refused["error"] == "too_many_attempts"
    assert after == {**before, "quota": before["quota"] + 20}
    assert keys == {"a:127.0.0.7": 10, "g:admin_login": 10}
    summaries = [d for d in audits(tmp_path) if d["event"] == "denied"]
    reasons: dict[str, int] = {}
    for summary in summaries:
        for reason, count in summary["reasons"].items():
            reasons[reason] = reasons.get(reason, 0) + count
    assert reasons == {"admin_login": 10, "admin_login_limit": 990}


@pytest.mark.sqlite
async def test_the_right_token_raced_among_a_thousand_wrong_ones_gives_no_extra_guess(tmp_path: Path) -> None:
    """Two worker processes, 24 connections: the right token sent among 1,000 wrong ones
    never frees a guess beyond the limit; exactly ten wrong tokens are compared, and the
    store holds exactly their ten charges."""
    env = base_env(tmp_path, TRIGGERGATE_ADMIN_TOKEN=TOKEN)
    requests = [_login(f"wrong-{i}") for i in range(1000)]
    requests.insert(5, _login(TOKEN))
    with serving(tmp_path, env, workers=2) as app:
        statuses = await _concurrent(app.port, "127.0.0.8", requests, connections=24)
        keys = _quota_keys(tmp_path)
    right = statuses.pop(5)
    assert right in (303, 429)
    assert statuses.count(401) == 10 and statuses.count(429) == 990
    assert keys == {"a:127.0.0.8": 10, "g:admin_login": 10}


@pytest.mark.parametrize(
    "store",
    [pytest.param("redis", marks=pytest.mark.redis), pytest.param("postgres", marks=pytest.mark.postgres)],
)
async def test_the_race_is_exact_on_the_network_stores(
    tmp_path: Path, store: str, request: pytest.FixtureRequest
) -> None:
    """The same race on Redis and PostgreSQL (two workers): exactly ten wrong tokens are
    compared, whatever the right one's fate."""
    server = request.getfixturevalue(f"{store}_server")
    if store == "redis":
        server.flush()
    else:
        server.reset()
    env = base_env(tmp_path, TRIGGERGATE_ADMIN_TOKEN=TOKEN, TRIGGERGATE_STORE=server.url)
    requests = [_login(f"wrong-{i}") for i in range(300)]
    requests.insert(5, _login(TOKEN))
    with serving(tmp_path, env, workers=2) as app:
        statuses = await _concurrent(app.port, "127.0.0.9", requests, connections=24)
    assert statuses.pop(5) in (303, 429)
    assert statuses.count(401) == 10 and statuses.count(429) == 290


@pytest.mark.sqlite
async def test_the_global_limit_trips_once_and_alerts_once_across_replicas(tmp_path: Path) -> None:
    """Six clients guess at once against two worker processes, 10/1h each, 30/1h overall:
    30 answers of 401, the rest 429, one audit record and one alert for the window,
    however many refusals follow on either process."""
    with webhook_server() as hook:
        env = base_env(
            tmp_path,
            TRIGGERGATE_ADMIN_TOKEN=TOKEN,
            TRIGGERGATE_ADMIN_LOGIN_BUDGET="30/1h",
            TRIGGERGATE_NOTIFY=f"log://,webhook+{hook.url}/hook",
        )
        with serving(tmp_path, env, workers=2) as app:
            sources = [f"127.0.0.{n}" for n in range(11, 17)]
            first = await asyncio.gather(
                *(_concurrent(app.port, s, [_login(f"{s}-{i}") for i in range(10)], 5) for s in sources)
            )
            flat = [status for answers in first for status in answers]
            later = await asyncio.gather(
                *(_concurrent(app.port, f"127.0.1.{n}", [_login("x")] * 5, 5) for n in range(1, 9))
            )
            deadline = time.monotonic() + 20
            while not hook.received and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)  # a second alert, had either process queued one, follows by now
    assert flat.count(401) == 30 and flat.count(429) == 30
    assert all(status == 429 for answers in later for status in answers)
    assert [r.json()["event"] for r in hook.received] == ["admin_login_limited"]
    reached = [d for d in audits(tmp_path) if d.get("action") == "login_limit_reached"]
    assert len(reached) == 1
    assert _quota_keys(tmp_path)["g:admin_login"] == 30


@pytest.mark.sqlite
@pytest.mark.parametrize(
    "token", ["short-admin-token", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "1234567890" * 4]
)
def test_serve_refuses_a_weak_admin_token_with_exit_2(tmp_path: Path, token: str) -> None:
    """``triggergate serve`` with a weak token exits 2 before listening, naming the key and
    how to generate a token, never printing it."""
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TRIGGERGATE_")}
    env = {**clean, **base_env(tmp_path, TRIGGERGATE_ADMIN_TOKEN=token)}
    done = subprocess.run(
        [sys.executable, "-m", "triggergate", "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "admin_token (TRIGGERGATE_ADMIN_TOKEN)" in done.stderr
    assert "secrets.token_urlsafe(32)" in done.stderr
    assert token not in done.stdout + done.stderr
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)


@pytest.mark.sqlite
async def test_metrics_answer_403_outside_and_200_inside_the_allowed_networks(tmp_path: Path) -> None:
    """With metrics_allow=127.0.0.1/32: 127.0.0.9 gets 403 with the safe body, or 200 with
    the admin token; 127.0.0.1 gets 200; behind a trusted proxy, the forwarded client
    counts, not the proxy."""
    env = base_env(
        tmp_path,
        TRIGGERGATE_ADMIN_TOKEN=TOKEN,
        TRIGGERGATE_METRICS_ALLOW="127.0.0.1/32",
        TRIGGERGATE_TRUSTED_PROXIES="127.0.0.2/32",
    )

    async def get(source: str, **headers: str) -> httpx.Response:
        transport = httpx.AsyncHTTPTransport(local_address=source)
        async with httpx.AsyncClient(transport=transport, timeout=10) as http:
            return await http.get(f"{app.url}/metrics", headers=headers)

    with serving(tmp_path, env) as app:
        outside = await get("127.0.0.9")
        with_token = await get("127.0.0.9", authorization=f"Bearer {TOKEN}")
        inside = await get("127.0.0.1")
        forwarded_outside = await get("127.0.0.2", **{"x-forwarded-for": "198.51.100.7"})
        forwarded_inside = await get("127.0.0.2", **{"x-forwarded-for": "127.0.0.1"})
    assert outside.status_code == 403
    assert set(outside.json()) == {"error", "detail", "request_id"} and "triggergate_" not in outside.text
    assert with_token.status_code == 200 and "triggergate_decisions" in with_token.text
    assert inside.status_code == 200 and "triggergate_decisions" in inside.text
    assert forwarded_outside.status_code == 403 and forwarded_inside.status_code == 200

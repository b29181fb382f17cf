"""Abuse against a real server: global budget, denial floods, alert digests and de-duplication."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.hardening.support import (
    audits,
    base_env,
    db,
    press,
    raw_flood,
    raw_once,
    serving,
    started_runs,
)
from tests.servers.webhook import WebhookServer, webhook_server

pytestmark = [pytest.mark.slow, pytest.mark.sqlite]


def events(hook: WebhookServer) -> Counter[str]:
    with hook.lock:
        return Counter(r.json()["event"] for r in hook.received)


def wait_events(hook: WebhookServer, event: str, count: int, timeout: float = 15) -> Counter[str]:
    deadline = time.monotonic() + timeout
    while events(hook)[event] < count and time.monotonic() < deadline:
        time.sleep(0.1)
    return events(hook)


def sources(n: int, third: int = 5) -> list[str]:
    return [f"127.0.{third + i // 250}.{1 + i % 250}" for i in range(n)]


async def test_500_clients_against_a_budget_of_20_start_exactly_20_runs(tmp_path: Path) -> None:
    """500 distinct clients press once each, 50 at a time, against budget 20/1d: exactly 20
    runs and 20 accepted audits; 480 get 503 budget_exhausted; one budget alert."""
    with webhook_server() as hook:
        env = base_env(
            tmp_path,
            TRIGGERGATE_BUDGET="20/1d",
            TRIGGERGATE_NOTIFY=f"webhook+{hook.url}/a",
            # Exactness is the point here, not latency: on a loaded 2-core machine two
            # workers' SQLite writes can queue past the default 0.8 s fail-closed budget.
            TRIGGERGATE_STORE_TIMEOUT="3",
        )
        with serving(tmp_path, env, workers=2) as server:
            gate = asyncio.Semaphore(50)

            async def one(source: str) -> tuple[int, bytes]:
                async with gate:
                    return await raw_once(server.port, source)

            responses = await asyncio.gather(*(one(s) for s in sources(500)))
            seen = wait_events(hook, "accepted", 20)
            await asyncio.sleep(1.5)  # a stray second budget alert would be delivered by now
            seen = events(hook)
    statuses = Counter(status for status, _ in responses)
    errors = Counter(json.loads(body).get("error") for status, body in responses)
    assert statuses == {202: 20, 503: 480}, errors
    assert {json.loads(body)["error"] for status, body in responses if status == 503} == {"budget_exhausted"}
    assert len(started_runs(tmp_path, expect=20)) == 20
    assert sum(a["event"] == "accepted" for a in audits(tmp_path)) == 20
    assert seen == {"accepted": 20, "budget_exhausted": 1}


def table_counts(workdir: Path) -> dict[str, int]:
    with contextlib.closing(db(workdir)) as conn:
        counts = {
            t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # noqa: S608 - fixed names
            for t in ("quota", "ledger", "outbox")
        }
        for kind, n in conn.execute("SELECT kind, count(*) FROM records GROUP BY kind"):
            counts[f"records:{kind}"] = n
    return counts


async def test_10000_denied_requests_write_nothing_and_log_a_few_lines(tmp_path: Path) -> None:
    """After its one accepted trigger, a client sends 10,000 more: all 429, no store write
    but at most one per-minute denial summary, at most a handful of log lines (each JSON,
    at most 2 KB), and no alert beyond the one for the accepted trigger."""
    with webhook_server() as hook:
        env = base_env(
            tmp_path,
            TRIGGERGATE_LIMITS="1/7d",
            TRIGGERGATE_PIPELINE="noop://",
            TRIGGERGATE_NOTIFY=f"webhook+{hook.url}/a",
        )
        with serving(tmp_path, env) as server:
            assert [r.status_code for r in await press(server.url, "127.0.7.1")] == [202]
            wait_events(hook, "accepted", 1)
            before = table_counts(tmp_path)
            watcher = db(tmp_path)
            version = watcher.execute("PRAGMA data_version").fetchone()[0]
            log_start = len(server.output())
            started = time.monotonic()
            flood = await raw_flood(server.port, "127.0.7.1", 10_000)
            elapsed = time.monotonic() - started
            statuses = Counter(status for status, _ in flood)
            after = table_counts(tmp_path)
            changes = watcher.execute("PRAGMA data_version").fetchone()[0] - version
            watcher.close()
            flood_log = server.output()[log_start:]
            await asyncio.sleep(1.2)
            alerts = events(hook)
    assert statuses == {429: 10_000}
    summaries = after.get("records:audit", 0) - before.get("records:audit", 0)
    # One summary record per finished minute of denials, never one per denial.
    assert summaries <= 1 + int(elapsed // 60), summaries
    assert {k: v for k, v in after.items() if k != "records:audit"} == {
        k: v for k, v in before.items() if k != "records:audit"
    }
    assert changes <= summaries, f"{changes} commits during the flood"
    lines = [line for line in flood_log.splitlines() if line.strip()]
    assert len(lines) <= 5, lines[:5]
    for line in lines:
        json.loads(line)
        assert len(line.encode()) <= 2048
    assert alerts == {"accepted": 1}
    print(f"flood: 10000 denials in {elapsed:.1f}s, {changes} commits, {len(lines)} log lines")


async def test_accepted_alerts_beyond_the_rate_collapse_into_one_digest(tmp_path: Path) -> None:
    """alert_rate 2/4s, 8 clients accepted within the window: 2 single alerts, then one
    digest naming the 6 others."""
    with webhook_server() as hook:
        env = base_env(
            tmp_path,
            TRIGGERGATE_PIPELINE="noop://",
            TRIGGERGATE_NOTIFY=f"webhook+{hook.url}/a",
            TRIGGERGATE_ALERT_RATE="2/4s",
        )
        with serving(tmp_path, env) as server:
            for source in sources(8, third=8):
                assert (await press(server.url, source))[0].status_code == 202
            seen = wait_events(hook, "digest", 1, timeout=12)
            with hook.lock:
                digest = [r.json() for r in hook.received if r.json()["event"] == "digest"]
    assert seen == {"accepted": 2, "digest": 1}
    assert digest[0]["attributes"]["held"] == "6"


async def test_identical_failure_alerts_are_deduplicated_within_the_window(
    tmp_path: Path,
) -> None:
    """The pipeline executable disappears; 6 clients' presses all fail the same way (502,
    refunded): one failure alert, then one digest counting 5 repeats."""
    with webhook_server() as hook:
        env = base_env(
            tmp_path,
            TRIGGERGATE_NOTIFY=f"webhook+{hook.url}/a",
            TRIGGERGATE_ALERT_DEDUP="3s",
        )
        with serving(tmp_path, env) as server:
            (tmp_path / "pipeline.sh").chmod(0o644)
            statuses = [(await press(server.url, s))[0].status_code for s in sources(6, third=9)]
            seen = wait_events(hook, "digest", 1, timeout=12)
            with hook.lock:
                digest = [r.json() for r in hook.received if r.json()["event"] == "digest"]
    assert statuses == [502] * 6
    assert seen == {"failed": 1, "digest": 1}
    assert digest[0]["attributes"]["repeated"] == "5"
    assert sum(a["event"] == "refunded" for a in audits(tmp_path)) == 6

"""Backend, notifier and process faults against real servers on a real SQLite store."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.hardening.support import (
    audits,
    base_env,
    db,
    press,
    raw_once,
    serving,
    started_runs,
)
from tests.servers.app import start_app
from tests.servers.webhook import webhook_server

pytestmark = [pytest.mark.slow, pytest.mark.sqlite]


def pending_rids(workdir: Path) -> list[str]:
    with contextlib.closing(db(workdir)) as conn:
        return [row[0] for row in conn.execute("SELECT rid FROM ledger")]


def counted(workdir: Path) -> Counter[str]:
    """Slots still counted, per client key (the quota table keeps no request ids)."""
    with contextlib.closing(db(workdir)) as conn:
        return Counter(row[0][2:] for row in conn.execute("SELECT key FROM quota WHERE key LIKE 'c:%'"))


def run_clients(workdir: Path, run_ids: list[str]) -> Counter[str]:
    """Started runs per client key, from the run records; a run without one fails the test."""
    with contextlib.closing(db(workdir)) as conn:
        docs = [
            conn.execute("SELECT doc FROM records WHERE kind = 'run' AND id = ?", (r,)).fetchone()
            for r in run_ids
        ]
    assert all(doc is not None for doc in docs), "a started run without a run record"
    return Counter(json.loads(doc[0])["client_key"] for doc in docs if doc)


def wait_settled(workdir: Path, timeout: float = 20) -> list[str]:
    deadline = time.monotonic() + timeout
    while (left := pending_rids(workdir)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


async def test_a_throttled_start_is_refunded_not_resent_and_the_next_press_starts_one_run(
    tmp_path: Path,
) -> None:
    """The pipeline hook answers 429 once: the start reached it, so it is not sent again;
    the press gets 502 and its slot back. The next press starts one run: one accepted
    start at the hook, one slot counted."""
    with webhook_server() as hook:
        hook.fail_times, hook.fail_status = 1, 429
        env = base_env(tmp_path, TRIGGERGATE_PIPELINE=f"webhook+{hook.url}/hook")
        with serving(tmp_path, env) as server:
            [refused] = await press(server.url, "127.0.10.1")
            [accepted] = await press(server.url, "127.0.10.1")
    assert (refused.status_code, accepted.status_code) == (502, 202)
    assert len(hook.rejected) == 1 and len(hook.received) == 1
    assert [a["event"] for a in audits(tmp_path)] == ["refunded", "accepted"]
    assert counted(tmp_path) == Counter({"127.0.10.1": 1})


async def test_a_permanently_failing_backend_refunds_answers_502_and_alerts(
    tmp_path: Path,
) -> None:
    """The hook always answers 404: 502 pipeline_unavailable, the slot is given back (3 of 3
    left), a 'refunded' audit record, and one 'failed' alert reaches the operator."""
    with webhook_server() as hook:
        hook.always_fail_paths, hook.fail_status = {"/hook"}, 404
        env = base_env(
            tmp_path,
            TRIGGERGATE_PIPELINE=f"webhook+{hook.url}/hook",
            TRIGGERGATE_NOTIFY=f"webhook+{hook.url}/alerts",
        )
        with serving(tmp_path, env) as server:
            [response] = await press(server.url, "127.0.10.2")
            async with httpx.AsyncClient(
                transport=httpx.AsyncHTTPTransport(local_address="127.0.10.2")
            ) as http:
                quota = (await http.get(f"{server.url}/quota")).json()
            deadline = time.monotonic() + 10
            while not hook.received and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
    assert response.status_code == 502
    assert response.json()["error"] == "pipeline_unavailable"
    assert quota["remaining"] == 3
    assert [a["event"] for a in audits(tmp_path)] == ["refunded"]
    assert [r.json()["event"] for r in hook.received] == ["failed"]
    assert counted(tmp_path) == Counter()


async def test_a_start_that_times_out_after_accepting_is_reconciled_never_run_twice(
    tmp_path: Path,
) -> None:
    """backend_timeout 0.05 s: the runner is spawned but the gateway gives up first (502,
    not refunded). The reconciler finds the run: one run, one counted slot, 'recovered'."""
    env = base_env(tmp_path, TRIGGERGATE_BACKEND_TIMEOUT="0.05", TRIGGERGATE_RECONCILE_AFTER="5.5")
    with serving(tmp_path, env) as server:
        [response] = await press(server.url, "127.0.10.3")
        left = wait_settled(tmp_path)
    runs = started_runs(tmp_path, expect=1, timeout=3)
    events = [a["event"] for a in audits(tmp_path)]
    assert left == []
    if response.status_code == 502:  # the usual case: the lookup fenced the late runner off
        assert runs == [] and events == ["failed", "refunded"]
        assert counted(tmp_path) == Counter()
    else:  # the runner took the run before the lookup: an ordinary accept
        assert response.status_code == 202 and events == ["accepted"]
        assert len(runs) == 1 and counted(tmp_path) == Counter({"127.0.10.3": 1})


async def test_a_failing_notifier_never_fails_the_trigger_and_is_dead_lettered(
    tmp_path: Path,
) -> None:
    """One notifier always fails: both triggers get 202, the good notifier gets both alerts,
    the bad one is tried outbox_attempts (2) times per alert, then each is dead-lettered."""
    with webhook_server() as hook:
        hook.always_fail_paths = {"/bad"}
        env = base_env(
            tmp_path,
            TRIGGERGATE_PIPELINE="noop://",
            TRIGGERGATE_NOTIFY=f"webhook+{hook.url}/bad,webhook+{hook.url}/good",
            TRIGGERGATE_DEAD_LETTER=f"webhook+{hook.url}/dead",
            TRIGGERGATE_OUTBOX_ATTEMPTS="2",
        )
        with serving(tmp_path, env) as server:
            statuses = [(await press(server.url, f"127.0.10.{i}"))[0].status_code for i in (4, 5)]
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                with hook.lock:
                    dead = [r for r in hook.received if r.path == "/dead"]
                if len(dead) == 2:
                    break
                await asyncio.sleep(0.2)
    assert statuses == [202, 202]
    paths = Counter(r.path for r in hook.received)
    assert paths == {"/good": 2, "/dead": 2}
    assert Counter(r.path for r in hook.rejected) == {"/bad": 4}
    assert {r.json()["event"] for r in dead} == {"dead_letter"}


@pytest.mark.parametrize("point", ["after_reserve", "after_start", "after_commit", "before_response"])
async def test_kill_9_at_each_fault_point_loses_nothing(tmp_path: Path, point: str) -> None:
    """SIGKILL at the 3rd pass of ``point``; restart without faults: every 202 has its audit
    record, every reservation was started exactly once or refunded, integrity_check ok."""
    env = base_env(tmp_path, TRIGGERGATE_BACKEND_TIMEOUT="2", TRIGGERGATE_RECONCILE_AFTER="7.5")
    server = start_app(tmp_path, {**env, "TRIGGERGATE_TEST_FAULTS": f"{point}=kill@3"})
    seen: list[tuple[int, bytes]] = []
    for i in range(1, 7):
        try:
            seen.append(await raw_once(server.port, f"127.0.11.{i}"))
        except (OSError, asyncio.IncompleteReadError):
            break
    server.proc.wait(timeout=10)
    accepted = {json.loads(body)["run_id"] for status, body in seen if status == 202}
    assert len(accepted) == 2, seen  # the third pass died
    with serving(tmp_path, env):
        left = wait_settled(tmp_path)
    assert left == []
    audited = {a.get("run_id") for a in audits(tmp_path) if a["event"] in ("accepted", "recovered")}
    assert accepted <= audited
    slots = counted(tmp_path)
    runs = started_runs(tmp_path, expect=sum(slots.values()))
    assert len(runs) == len(set(runs)), "a run started twice"
    assert slots == run_clients(tmp_path, runs), "a counted slot without a run, or a run without a slot"
    expected_runs = 2 if point == "after_reserve" else 3
    assert len(runs) == expected_runs
    with contextlib.closing(db(tmp_path)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


async def test_racing_and_retried_idempotent_requests_start_one_run_one_charge(
    tmp_path: Path,
) -> None:
    """20 simultaneous POSTs with one Idempotency-Key on 2 workers, then 3 retries: one run,
    one slot charged (2 of 3 left), every 202 names the same run."""
    env = base_env(tmp_path)
    with serving(tmp_path, env, workers=2) as server:
        headers = {"Idempotency-Key": "deploy-2026-11-26"}
        racing = await press(server.url, "127.0.12.1", 20, headers=headers)
        retries = [(await press(server.url, "127.0.12.1", headers=headers))[0] for _ in range(3)]
        async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(local_address="127.0.12.1")) as http:
            quota = (await http.get(f"{server.url}/quota")).json()
    statuses = Counter(r.status_code for r in racing + retries)
    assert set(statuses) <= {202, 409}, statuses
    run_ids = {r.json()["run_id"] for r in racing + retries if r.status_code == 202}
    assert len(run_ids) == 1
    assert all(r.status_code == 202 for r in retries)
    assert started_runs(tmp_path, expect=1) == list(run_ids)
    assert quota["remaining"] == 2
    assert sum(counted(tmp_path).values()) == 1

"""The flow end to end on real servers: e-mail alerts, racing idempotency keys,
fail-closed timing, bounded denial logs."""

from __future__ import annotations

import asyncio
import fcntl
import os
import stat
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from tests.servers.app import start_app
from tests.servers.smtp import smtp_server
from triggergate.settings import Settings
from triggergate.web.app import create_app


def settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "store": f"sqlite:///{tmp_path}/gate.db",
        "pipeline": "noop://",
        "state_dir": tmp_path / "state",
        "coalesce": False,
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


def test_accepted_trigger_sends_the_reference_email(tmp_path: Path) -> None:
    """An accepted press sends "Pipeline triggered via public endpoint" with pipeline, client, run id."""
    with smtp_server() as mail:
        url = f"smtp://127.0.0.1:{mail.port}?to=ops@example.com&from=gate@example.com"
        app = create_app(settings(tmp_path, notify=["log://", url]))
        with TestClient(app, client=("198.51.100.20", 1)) as client:
            run_id = client.post("/trigger").json()["run_id"]
            deadline = time.monotonic() + 10
            while not mail.messages and time.monotonic() < deadline:
                time.sleep(0.05)
    assert len(mail.messages) == 1
    message = mail.messages[0].message
    assert message["Subject"] == "Pipeline triggered via public endpoint"
    body = message.get_content()
    assert "Pipeline: noop" in body and "Client: 198.51.100.20" in body and run_id in body
    assert mail.messages[0].rcpt_tos == ["ops@example.com"]


def test_refused_start_refunds_alerts_and_answers_502(tmp_path: Path) -> None:
    """A pipeline that cannot start: 502 with the safe body, slot refunded, failure e-mail sent."""
    script = tmp_path / "pipeline.sh"
    script.write_text("#!/usr/bin/env bash\nexit 0\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    with smtp_server() as mail:
        url = f"smtp://127.0.0.1:{mail.port}?to=ops@example.com&from=gate@example.com"
        app = create_app(settings(tmp_path, pipeline=f"command://{script}", notify=[url]))
        with TestClient(app, client=("198.51.100.21", 1)) as client:
            script.unlink()  # the executable vanishes after start-up: a definite refusal
            response = client.post("/trigger")
            assert response.status_code == 502
            assert set(response.json()) == {"error", "detail", "request_id"}
            assert str(tmp_path) not in response.text
            assert client.get("/quota").json()["remaining"] == 3
            deadline = time.monotonic() + 10
            while not mail.messages and time.monotonic() < deadline:
                time.sleep(0.05)
    assert [m.message["Subject"] for m in mail.messages] == ["Pipeline trigger failed"]


def test_store_that_cannot_answer_fails_closed_within_a_second(tmp_path: Path) -> None:
    """While the SQLite write lock is held elsewhere, a press gets 503 in under 1 s and starts nothing."""
    app = create_app(settings(tmp_path))
    with TestClient(app, client=("198.51.100.22", 1)) as client:
        fd = os.open(f"{tmp_path}/gate.db.lock", os.O_RDWR)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            started = time.monotonic()
            response = client.post("/trigger")
            elapsed = time.monotonic() - started
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        assert response.status_code == 503 and response.json()["error"] == "unavailable"
        assert "retry-after" in response.headers
        assert elapsed < 1.0
        time.sleep(1.2)  # the abandoned write must not have run: nothing was counted
        assert client.get("/quota").json()["remaining"] == 3
        assert client.post("/trigger").status_code == 202


def test_denial_flood_logs_one_summary_not_one_line_each(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """300 denied presses produce no per-request log line; the summary counts them all."""
    app = create_app(settings(tmp_path, limits=["1/1d"]))
    with TestClient(app, client=("198.51.100.23", 1)) as client:
        client.post("/trigger")
        seen, deadline = "", time.monotonic() + 10
        while "Pipeline triggered" not in seen and time.monotonic() < deadline:
            seen += capfd.readouterr().err  # let the accepted alert go out first
            time.sleep(0.05)
        assert Counter(client.post("/trigger").status_code for _ in range(300)) == {429: 300}
        during = capfd.readouterr().err
    after = capfd.readouterr().err
    assert "198.51.100.23" not in during
    summaries = [line for line in after.splitlines() if '"message": "denials"' in line]
    assert len(summaries) == 1 and '"total": 300' in summaries[0]


async def test_racing_requests_with_one_idempotency_key_start_one_run_charged_once(
    tmp_path: Path,
) -> None:
    """20 simultaneous presses with one key on 2 worker processes: one run, one charge, one answer."""
    env = {
        "TRIGGERGATE_STORE": f"sqlite:///{tmp_path}/gate.db",
        "TRIGGERGATE_PIPELINE": "noop://",
        "TRIGGERGATE_STATE_DIR": str(tmp_path / "state"),
        "TRIGGERGATE_COALESCE": "false",
    }
    server = start_app(tmp_path, env, workers=2)
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            responses = await asyncio.gather(
                *(
                    client.post(f"{server.url}/trigger", headers={"Idempotency-Key": "deploy-42"})
                    for _ in range(20)
                )
            )
            quota = (await client.get(f"{server.url}/quota")).json()
    finally:
        server.stop()
    assert {r.status_code for r in responses} == {202}
    assert len({r.json()["run_id"] for r in responses}) == 1
    assert quota["remaining"] == 2

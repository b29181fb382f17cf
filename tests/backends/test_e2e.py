"""Every CI backend end to end: the real app (uvicorn, SQLite) in front of each contract server.

What a person sees through ``POST /trigger`` and ``GET /runs/{id}``: status
progression, one run per Idempotency-Key under a race, coalescing, retries,
refund + alert on a definite refusal, and no token anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.backends.contract import github, gitlab, jenkins, webhook
from tests.backends.contract._server import Fault, Faults, serve
from triggergate.clock import ManualClock
from triggergate.settings import Settings
from triggergate.web.app import create_app
from triggergate.wiring import build_service

SAFE_KEYS = {"error", "detail", "request_id"}


@dataclass
class System:
    """One contract server and how to point triggergate at it."""

    name: str
    pipeline: str
    env: dict[str, str]
    bad_env: dict[str, str]
    faults: Faults
    runs: Callable[[], int]
    secrets: tuple[str, ...]
    has_status: bool = True


@contextlib.contextmanager
def contract(name: str) -> Iterator[System]:
    if name == "github":
        gh = github.GitHubState()
        with serve(github.build_app(gh)) as url:
            yield System(
                name,
                f"github://acme/site/deploy.yml?ref=main&api={url}",
                {"GITHUB_TOKEN": github.TOKEN},
                {"GITHUB_TOKEN": "ghp_badTOKENmustNotLeak0000000000"},
                gh.faults,
                lambda: len(gh.runs),
                (github.TOKEN, "ghp_badTOKENmustNotLeak0000000000"),
            )
    elif name == "gitlab":
        gl = gitlab.GitLabState()
        with serve(gitlab.build_app(gl)) as url:
            host = url.removeprefix("http://")
            bad = "glptt-badTOKENmustNotLeak0000000000"
            read = {"GITLAB_READ_TOKEN": gitlab.READ_TOKEN}
            yield System(
                name,
                f"gitlab://{host}/acme/platform/site?ref=main&scheme=http",
                {"GITLAB_TRIGGER_TOKEN": gitlab.TRIGGER_TOKEN, **read},
                {"GITLAB_TRIGGER_TOKEN": bad, **read},
                gl.faults,
                lambda: len(gl.pipelines),
                (gitlab.TRIGGER_TOKEN, gitlab.READ_TOKEN, bad),
            )
    elif name == "jenkins":
        jk = jenkins.JenkinsState(crumb_required=True)
        with serve(jenkins.build_app(jk)) as url:
            bad = "11badTOKENmustNotLeak000000000000"
            yield System(
                name,
                f"jenkins+http://{url.removeprefix('http://')}/job/web/job/deploy",
                {"JENKINS_USER": jenkins.USER, "JENKINS_TOKEN": jenkins.TOKEN},
                {"JENKINS_USER": jenkins.USER, "JENKINS_TOKEN": bad},
                jk.faults,
                lambda: len(jk.queue),
                (jenkins.TOKEN, bad),
            )
    else:
        hs = webhook.HookState()
        with serve(webhook.build_app(hs)) as url:
            bad = "whsec_badSECRETmustNotLeak000000000"
            yield System(
                name,
                f"webhook+{url}/build_hooks/5c23354f454e1350f8543e78?ok=202",
                {"PIPELINE_WEBHOOK_SECRET": webhook.SECRET},
                {"PIPELINE_WEBHOOK_SECRET": bad},
                hs.faults,
                lambda: len(hs.hooks),
                (webhook.SECRET, bad),
                has_status=False,
            )


@pytest.fixture(params=["github", "gitlab", "jenkins", "webhook"])
def system(request: pytest.FixtureRequest) -> Iterator[System]:
    with contract(request.param) as sys_:
        yield sys_


@dataclass
class Gate:
    """The running app, its clock, and what it logged."""

    client: httpx.AsyncClient
    clock: ManualClock
    logs: list[logging.LogRecord]

    async def wait_for_log(self, logger: str, needle: str) -> logging.LogRecord:
        for _ in range(100):
            for record in self.logs:
                if record.name == logger and needle in record.getMessage():
                    return record
            await asyncio.sleep(0.05)
        raise AssertionError(f"no {logger} log line containing {needle!r}")


class _Keep(logging.Handler):
    def __init__(self, into: list[logging.LogRecord]) -> None:
        super().__init__(logging.DEBUG)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record)


@contextlib.asynccontextmanager
async def running(
    system: System,
    tmp: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    bad: bool = False,
    **settings: Any,
) -> AsyncIterator[Gate]:
    for key, value in (system.bad_env if bad else system.env).items():
        monkeypatch.setenv(f"TRIGGERGATE_{key}", value)
    values: dict[str, Any] = {
        "store": f"sqlite:///{tmp}/gate.db",
        "pipeline": system.pipeline,
        "notify": ["log://"],
        "state_dir": tmp / "state",
        "limits": ["5/1d"],
        "coalesce": False,
        "log_level": "DEBUG",
        **settings,
    }
    clock = ManualClock(time.time())
    config = Settings(**values)
    app = create_app(config, service=build_service(config, clock))
    records: list[logging.LogRecord] = []
    handler = _Keep(records)
    logging.getLogger().addHandler(handler)  # create_app replaced the root handlers
    # create_app quiets httpx (hook URLs can hold secrets); open it up here so the
    # leak checks also see every request line an operator could turn on.
    for name in ("httpx", "httpcore"):
        monkeypatch.setattr(logging.getLogger(name), "level", logging.DEBUG)
    try:
        with serve(app, lifespan="on") as url:
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                yield Gate(client, clock, records)
    finally:
        logging.getLogger().removeHandler(handler)


def leak_check(secrets: tuple[str, ...], gate: Gate, responses: list[httpx.Response], err: str) -> None:
    texts = [r.text for r in responses] + [json.dumps(dict(r.headers)) for r in responses]
    texts += [r.getMessage() for r in gate.logs] + [str(r.__dict__) for r in gate.logs] + [err]
    for secret in secrets:
        for text in texts:
            assert secret not in text


async def test_start_then_status_progresses_through_get_runs(
    system: System, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """POST /trigger starts one run; GET /runs/{id} follows it to succeeded with the backend's
    URL.
    """
    async with running(system, tmp_path, monkeypatch) as gate:
        accepted = await gate.client.post("/trigger")
        assert accepted.status_code == 202, accepted.text
        run_id = accepted.json()["run_id"]
        seen = []
        for _ in range(8):
            gate.clock.advance(5)  # past the status cache
            view = (await gate.client.get(f"/runs/{run_id}")).json()
            seen.append(view["status"])
            if view["status"] == "succeeded":
                break
    assert system.runs() == 1
    if system.has_status:
        assert seen[-1] == "succeeded"
        assert seen[0] in ("queued", "running")
        assert view["url"]
    else:
        assert set(seen) == {"queued"}  # the hook has no read API: the state it was started in


async def test_status_reads_are_cached_toward_the_backend(
    system: System, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twenty quick GET /runs/{id} cost the CI system at most one status read."""
    async with running(system, tmp_path, monkeypatch) as gate:
        run_id = (await gate.client.post("/trigger")).json()["run_id"]
        before = system.faults.count("GET")
        views = await asyncio.gather(*(gate.client.get(f"/runs/{run_id}") for _ in range(20)))
        assert all(v.status_code == 200 for v in views)
        assert system.faults.count("GET") - before <= 2  # a queue item read may lead to its build


async def test_ten_racing_requests_with_one_idempotency_key_start_one_run(
    system: System, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ten simultaneous presses with one Idempotency-Key: one run, one run id, one charge."""
    async with running(system, tmp_path, monkeypatch) as gate:
        headers = {"Idempotency-Key": "press-0001"}
        answers = await asyncio.gather(*(gate.client.post("/trigger", headers=headers) for _ in range(10)))
        quota = (await gate.client.get("/quota")).json()
    assert [a.status_code for a in answers] == [202] * 10
    assert len({a.json()["run_id"] for a in answers}) == 1
    assert system.runs() == 1
    assert quota["remaining"] == 4


async def test_coalescing_joins_the_active_run_without_charge(
    system: System, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a run is queued or running, a new press joins it, is not charged, and is told which
    run.
    """
    async with running(system, tmp_path, monkeypatch, coalesce=True) as gate:
        first = (await gate.client.post("/trigger")).json()
        joined = await gate.client.post("/trigger")
        quota = (await gate.client.get("/quota")).json()
    assert joined.status_code == 202
    assert joined.json()["status"] == "joined"
    assert joined.json()["run_id"] == first["run_id"]
    assert quota["remaining"] == 4
    assert system.runs() == 1


async def test_retry_then_success_starts_one_run(
    system: System, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two 503 answers from the CI system are retried inside one press; one run starts."""
    async with running(system, tmp_path, monkeypatch) as gate:
        system.faults.inject(Fault(status=503), Fault(status=503))
        accepted = await gate.client.post("/trigger")
    assert accepted.status_code == 202
    assert system.runs() == 1


async def test_definite_refusal_refunds_alerts_and_leaks_no_token(
    system: System, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rejected token: 502 with the safe body, the slot given back, an operator alert, no secret
    anywhere.
    """
    async with running(system, tmp_path, monkeypatch, bad=True) as gate:
        refused = await gate.client.post("/trigger")
        quota = await gate.client.get("/quota")
        alert = await gate.wait_for_log("triggergate.alerts", "HTTP 40")
        leak_check(system.secrets, gate, [refused, quota], "")
    assert refused.status_code == 502
    assert set(refused.json()) == SAFE_KEYS
    assert "HTTP" not in refused.json()["detail"]
    assert quota.json()["remaining"] == 5
    assert system.runs() == 0
    assert system.name in alert.getMessage()


async def test_tokens_absent_from_every_log_line_and_response(
    system: System, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full press and status read log at DEBUG without any token, and no response carries one."""
    async with running(system, tmp_path, monkeypatch) as gate:
        accepted = await gate.client.post("/trigger")
        gate.clock.advance(5)
        status = await gate.client.get(f"/runs/{accepted.json()['run_id']}")
        page = await gate.client.get("/")
        await gate.wait_for_log("triggergate.alerts", accepted.json()["run_id"])
        assert len(gate.logs) > 3
        leak_check(system.secrets, gate, [accepted, status, page], "")

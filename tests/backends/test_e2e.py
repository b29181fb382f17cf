"""Every CI backend end to end: the real app (uvicorn, SQLite) in front of each contract server.

What a person sees through ``POST /trigger`` and ``GET /runs/{id}``: one press, one run
(with status progression); a start the CI system never received, retried, one run; ten
racing presses with one Idempotency-Key, one run; coalescing; a refusal, refund + alert +
502; an uncertain start, reconciled once; the ref selecting what runs; no token anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from tests.backends.contract import github, gitlab, jenkins, webhook
from tests.backends.contract._server import Fault, Faults, serve, serve_later
from triggergate.clock import ManualClock
from triggergate.service import Service
from triggergate.settings import Settings
from triggergate.web.app import create_app
from triggergate.wiring import build_service

SAFE_KEYS = {"error", "detail", "request_id"}
T = TypeVar("T")


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
    # (the ref it ran, the inputs it got) for each start the system accepted
    seen: Callable[[], list[tuple[str | None, dict[str, str]]]]
    listen: Callable[[], None]  # start accepting connections (see ``contract(late=True)``)
    has_status: bool = True
    has_find: bool = True


@contextlib.contextmanager
def contract(name: str, late: bool = False) -> Iterator[System]:
    """The system ``name`` on a free port; with ``late`` it refuses connections until
    ``System.listen()`` is called."""
    if name == "github":
        gh = github.GitHubState(branches={"main", "release"})
        with serve_later(github.build_app(gh)) as (url, listen):
            yield System(
                name,
                f"github://acme/site/deploy.yml?ref=main&api={url}",
                {"GITHUB_TOKEN": github.TOKEN},
                {"GITHUB_TOKEN": "ghp_badTOKENmustNotLeak0000000000"},
                gh.faults,
                lambda: len(gh.runs),
                (github.TOKEN, "ghp_badTOKENmustNotLeak0000000000"),
                lambda: [(d["ref"], d["inputs"]) for d in gh.dispatched],
                _started(listen, late),
            )
    elif name == "gitlab":
        gl = gitlab.GitLabState(branches={"main", "release"})
        with serve_later(gitlab.build_app(gl)) as (url, listen):
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
                lambda: [(p["ref"], p["variables"]) for p in gl.pipelines],
                _started(listen, late),
            )
    elif name == "jenkins":
        declared = {"env": "staging", "BRANCH": "main", "TRIGGERGATE_ID": ""}
        jk = jenkins.JenkinsState(crumb_required=True, params=declared)
        with serve_later(jenkins.build_app(jk)) as (url, listen):
            bad = "11badTOKENmustNotLeak000000000000"
            yield System(
                name,
                f"jenkins+http://{url.removeprefix('http://')}/job/web/job/deploy?ref_param=BRANCH",
                {"JENKINS_USER": jenkins.USER, "JENKINS_TOKEN": jenkins.TOKEN},
                {"JENKINS_USER": jenkins.USER, "JENKINS_TOKEN": bad},
                jk.faults,
                lambda: len(jk.queue),
                (jenkins.TOKEN, bad),
                lambda: [
                    (i["params"]["BRANCH"], {k: v for k, v in i["params"].items() if k != "BRANCH"})
                    for i in jk.queue
                ],
                _started(listen, late),
            )
    else:
        hs = webhook.HookState()
        with serve_later(webhook.build_app(hs)) as (url, listen):
            bad = "whsec_badSECRETmustNotLeak000000000"
            yield System(
                name,
                f"webhook+{url}/build_hooks/5c23354f454e1350f8543e78?ok=202",
                {"PIPELINE_WEBHOOK_SECRET": webhook.SECRET},
                {"PIPELINE_WEBHOOK_SECRET": bad},
                hs.faults,
                lambda: len(hs.hooks),
                (webhook.SECRET, bad),
                lambda: [(h["body"]["ref"] or None, h["body"]["params"]) for h in hs.hooks],
                _started(listen, late),
                has_status=False,
                has_find=False,
            )


def _started(listen: Callable[[], None], late: bool) -> Callable[[], None]:
    if not late:
        listen()
        return lambda: None
    return listen


@pytest.fixture(params=["github", "gitlab", "jenkins", "webhook"])
def system(request: pytest.FixtureRequest) -> Iterator[System]:
    with contract(request.param) as sys_:
        yield sys_


class LoopProbe:
    """Wraps the app to learn the event loop the server runs it on."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.loop = asyncio.get_running_loop()
        await self.app(scope, receive, send)


@dataclass
class Gate:
    """The running app, its clock, and what it logged."""

    client: httpx.AsyncClient
    clock: ManualClock
    logs: list[logging.LogRecord]
    service: Service
    probe: LoopProbe

    async def in_server(self, call: Callable[[], Awaitable[T]]) -> T:
        """Run ``call()`` on the server's event loop (its clients are bound to it)."""
        assert self.probe.loop is not None

        async def job() -> T:
            return await call()

        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(job(), self.probe.loop))

    async def audit_events(self) -> list[str]:
        until = self.clock() + 1
        docs = await self.in_server(
            lambda: self.service.store.query("audit", since=0, until=until, limit=100)
        )
        return [str(doc["event"]) for doc in docs]

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
    service = build_service(config, clock)
    probe = LoopProbe(create_app(config, service=service))
    records: list[logging.LogRecord] = []
    handler = _Keep(records)
    logging.getLogger().addHandler(handler)  # create_app replaced the root handlers
    # create_app quiets httpx (hook URLs can hold secrets); open it up here so the
    # leak checks also see every request line an operator could turn on.
    for name in ("httpx", "httpcore"):
        monkeypatch.setattr(logging.getLogger(name), "level", logging.DEBUG)
    try:
        with serve(probe, lifespan="on") as url:
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                yield Gate(client, clock, records, service, probe)
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


@pytest.mark.parametrize("name", ["github", "gitlab", "jenkins", "webhook"])
async def test_a_start_the_ci_system_never_received_is_retried_and_starts_one_run(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CI system refuses connections at the first attempt (nothing listens yet): that
    start provably never arrived, so it is sent again inside the same press; once the
    system listens, one 202 and one run."""
    with contract(name, late=True) as system:
        options = {"http_attempts": 40, "http_budget": 12.0, "http_backoff": 0.1}
        async with running(system, tmp_path, monkeypatch, pipeline_options=options) as gate:
            press = asyncio.create_task(gate.client.post("/trigger"))
            await gate.wait_for_log("triggergate.backends", "cannot connect")
            system.listen()
            accepted = await press
            quota = (await gate.client.get("/quota")).json()
    assert accepted.status_code == 202, accepted.text
    assert system.runs() == 1
    assert system.faults.count("POST") == 1 + (name == "jenkins")  # + the crumb's 403
    assert quota["remaining"] == 4


async def test_an_uncertain_start_is_reconciled_once(
    system: System, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The system starts the run but the answer is lost: the press is never resent. The run
    is found (at once, or by the reconciler after reconcile_after) and counted once; a
    second reconciliation does nothing. A system without a lookup (the generic hook)
    counts it as not started: refunded once."""
    async with running(system, tmp_path, monkeypatch) as gate:
        if system.name == "jenkins":
            await gate.client.post("/trigger")  # fetch the crumb first: its 403 is no fault
            system.faults.inject(Fault(after="drop"))
        else:
            system.faults.inject(Fault(after="drop"))
        pressed = await gate.client.post("/trigger")
        await asyncio.sleep(0.5)  # GitHub lists a new run a moment after it starts
        gate.clock.advance(gate.service.policy.reconcile_after + 10)
        handled = [await gate.in_server(gate.service.reconcile) for _ in range(2)]
        quota = (await gate.client.get("/quota")).json()
        events = await gate.audit_events()
    started = 2 if system.name == "jenkins" else 1
    assert system.runs() == started
    assert sum(handled) <= 1 and handled[1] == 0
    if system.has_find:
        settled = events.count("accepted") + events.count("recovered")
        assert settled == started
        assert "refunded" not in events
        assert quota["remaining"] == 5 - started
        assert pressed.status_code in (202, 502)
    else:
        assert pressed.status_code == 502
        assert events.count("refunded") == 1
        assert quota["remaining"] == 5


async def test_a_pressed_ref_selects_what_runs_and_is_never_an_input(
    system: System, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """{"ref": "release"} with ref allow-listed: the system runs "release" (GitHub's and
    GitLab's ref, the Jenkins job's BRANCH parameter, the hook body's "ref"), and no
    workflow input, pipeline variable, job parameter or hook param is named "ref"."""
    params = {"ref": {"choices": ["main", "release"]}, "env": {"default": "prod"}}
    async with running(system, tmp_path, monkeypatch, params=params) as gate:
        accepted = await gate.client.post("/trigger", json={"ref": "release"})
    assert accepted.status_code == 202, accepted.text
    [(ref, inputs)] = system.seen()
    assert ref == "release"
    assert "ref" not in inputs
    assert inputs["env"] == "prod"


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

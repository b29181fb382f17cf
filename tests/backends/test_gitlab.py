"""GitLab backend against the contract server in tests/backends/contract/gitlab.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.backends.conftest import assert_secret_absent, context
from tests.backends.contract._server import Fault, serve
from tests.backends.contract.gitlab import READ_TOKEN, TRIGGER_TOKEN, GitLabState, build_app
from triggergate.backends.base import StartRequest
from triggergate.backends.gitlab import GitLabBackend
from triggergate.errors import BackendRefused, BackendUncertain
from triggergate.registry import backend_from_url


@pytest.fixture
def gl() -> Iterator[tuple[GitLabState, str]]:
    state = GitLabState()
    with serve(build_app(state)) as url:
        yield state, url.removeprefix("http://")


def make(host: str, trigger: str = TRIGGER_TOKEN, ref: str = "main") -> GitLabBackend:
    backend = backend_from_url(
        f"gitlab://{host}/acme/platform/site?ref={ref}&scheme=http",
        context({"GITLAB_TRIGGER_TOKEN": trigger, "GITLAB_READ_TOKEN": READ_TOKEN}),
    )
    assert isinstance(backend, GitLabBackend)
    return backend


@pytest.fixture
async def backend(gl: tuple[GitLabState, str]) -> AsyncIterator[GitLabBackend]:
    b = make(gl[1])
    yield b
    await b.close()


def req(rid: str = "req-1", **params: str) -> StartRequest:
    return StartRequest(request_id=rid, client="198.51.100.7", params=params)


async def test_start_passes_variables_and_status_progresses_to_succeeded(
    gl: tuple[GitLabState, str], backend: GitLabBackend
) -> None:
    """A trigger carries params and TRIGGERGATE_ID; reads go queued, queued, running, succeeded."""
    started = await backend.start(req(ENV="prod"))
    pipeline = gl[0].pipelines[0]
    assert pipeline["variables"] == {"ENV": "prod", "TRIGGERGATE_ID": "req-1"}
    assert started.ref == str(pipeline["id"])
    assert started.url == f"https://gitlab.example.com/acme/platform/site/-/pipelines/{started.ref}"
    seen = [(await backend.status(started.ref)).state for _ in range(4)]
    assert seen == ["queued", "queued", "running", "succeeded"]


async def test_canceled_pipeline_maps_to_cancelled(
    gl: tuple[GitLabState, str], backend: GitLabBackend
) -> None:
    """A pipeline GitLab reports as canceled reads as cancelled."""
    gl[0].final = "canceled"
    started = await backend.start(req())
    assert [(await backend.status(started.ref)).state for _ in range(4)][-1] == "cancelled"


async def test_retry_after_503_then_success_starts_one_pipeline(
    gl: tuple[GitLabState, str], backend: GitLabBackend
) -> None:
    """Two 503 answers are retried; the third attempt starts exactly one pipeline."""
    gl[0].faults.inject(Fault(status=503), Fault(status=503))
    await backend.start(req())
    assert gl[0].faults.count("POST") == 3
    assert len(gl[0].pipelines) == 1


async def test_429_retry_after_http_date_is_honoured(
    gl: tuple[GitLabState, str], backend: GitLabBackend
) -> None:
    """A 429 whose Retry-After is an HTTP date two seconds ahead delays the retry past one
    second.
    """
    from email.utils import formatdate

    gl[0].faults.inject(Fault(status=429, retry_after=formatdate(time.time() + 2, usegmt=True)))
    begin = time.monotonic()
    await backend.start(req())
    assert time.monotonic() - begin >= 1.0
    assert len(gl[0].pipelines) == 1


@pytest.mark.parametrize(("case", "status"), [("token", "404"), ("ref", "400"), ("forbidden", "403")])
async def test_definite_refusal_raises_backend_refused_and_starts_nothing(
    gl: tuple[GitLabState, str], case: str, status: str
) -> None:
    """A wrong trigger token, an unknown ref or a 403 give BackendRefused naming the status."""
    backend = (
        make(gl[1], trigger="glptt-wrong000000000")
        if case == "token"
        else make(gl[1], ref="gone" if case == "ref" else "main")
    )
    if case == "forbidden":
        gl[0].faults.refusal = 403
    try:
        with pytest.raises(BackendRefused) as info:
            await backend.start(req())
    finally:
        await backend.close()
    assert info.value.misconfigured
    assert f"HTTP {status}" in str(info.value)
    assert gl[0].pipelines == []


async def test_wrong_read_token_refuses_status_reads(gl: tuple[GitLabState, str]) -> None:
    """A status read with a rejected read token is a 401 refusal, not a guessed state."""
    backend = backend_from_url(
        f"gitlab://{gl[1]}/acme/platform/site?scheme=http",
        context({"GITLAB_TRIGGER_TOKEN": TRIGGER_TOKEN, "GITLAB_READ_TOKEN": "glpat-bad"}),
    )
    try:
        started = await backend.start(req())
        with pytest.raises(BackendRefused, match="HTTP 401"):
            await backend.status(started.ref)
    finally:
        await backend.close()


@pytest.mark.parametrize("after", ["drop", "hang"])
async def test_ambiguous_start_is_uncertain_and_find_locates_the_single_pipeline(
    gl: tuple[GitLabState, str], backend: GitLabBackend, after: str
) -> None:
    """Accepted-then-dropped or accepted-then-stalled: BackendUncertain, then find() returns the
    pipeline.
    """
    await backend.start(req("req-0"))
    gl[0].faults.inject(Fault(after=after, seconds=1.5))
    with pytest.raises(BackendUncertain):
        await backend.start(req("req-amb"))
    assert len(gl[0].pipelines) == 2
    found = await backend.find("req-amb")
    assert found is not None
    assert found.ref == str(gl[0].pipelines[1]["id"])
    assert await backend.find("req-never") is None
    assert len(gl[0].pipelines) == 2


async def test_ten_racing_starts_with_one_request_id_start_one_pipeline(
    gl: tuple[GitLabState, str], backend: GitLabBackend
) -> None:
    """Ten concurrent start() calls with one request id share one trigger and one pipeline."""
    results = await asyncio.gather(*(backend.start(req("req-race")) for _ in range(10)))
    assert len(gl[0].pipelines) == 1
    assert {r.ref for r in results} == {str(gl[0].pipelines[0]["id"])}


async def test_tokens_absent_from_errors_logs_and_results(
    gl: tuple[GitLabState, str], all_logs: pytest.LogCaptureFixture
) -> None:
    """Trigger and read tokens appear in no exception text, log line or result."""
    wrong = "glptt-wrongTOKENwhichMustNotLeak012345"
    bad, good = make(gl[1], trigger=wrong), make(gl[1])
    try:
        with pytest.raises(BackendRefused) as info:
            await bad.start(req())
        started = await good.start(req("req-ok"))
        status = await good.status(started.ref)
        found = await good.find("req-ok")
    finally:
        await bad.close()
        await good.close()
    assert all_logs.records
    for secret in (wrong, TRIGGER_TOKEN, READ_TOKEN):
        assert_secret_absent(secret, info.value, info.value.__cause__, all_logs.text, started, status, found)

"""GitHub Actions backend against the contract server in tests/backends/contract/github.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.backends.conftest import assert_secret_absent, context
from tests.backends.contract._server import Fault, serve
from tests.backends.contract.github import TOKEN, GitHubState, build_app
from triggergate.backends.base import StartRequest
from triggergate.backends.github import GitHubBackend
from triggergate.errors import BackendRefused, BackendUncertain
from triggergate.registry import backend_from_url


@pytest.fixture
def gh() -> Iterator[tuple[GitHubState, str]]:
    state = GitHubState()
    with serve(build_app(state)) as url:
        yield state, url


def make(url: str, token: str = TOKEN, path: str = "acme/site/deploy.yml") -> GitHubBackend:
    backend = backend_from_url(f"github://{path}?ref=main&api={url}", context({"GITHUB_TOKEN": token}))
    assert isinstance(backend, GitHubBackend)
    return backend


@pytest.fixture
async def backend(gh: tuple[GitHubState, str]) -> AsyncIterator[GitHubBackend]:
    b = make(gh[1])
    yield b
    await b.close()


def req(rid: str = "req-1", **params: str) -> StartRequest:
    return StartRequest(request_id=rid, client="198.51.100.7", params=params)


async def test_start_returns_run_details_and_status_progresses_to_succeeded(
    gh: tuple[GitHubState, str], backend: GitHubBackend
) -> None:
    """A dispatch answered with run details gives the run id and URL; reads go
    queued->running->succeeded.
    """
    started = await backend.start(req(env="prod"))
    state = gh[0]
    assert started.ref == str(state.runs[0]["id"])
    assert started.url == f"https://github.com/acme/site/actions/runs/{started.ref}"
    seen = [(await backend.status(started.ref)).state for _ in range(3)]
    assert seen == ["queued", "running", "succeeded"]
    assert (await backend.status(started.ref)).url == started.url


async def test_failed_conclusion_maps_to_failed(gh: tuple[GitHubState, str], backend: GitHubBackend) -> None:
    """A run that completes with conclusion failure reads as failed."""
    gh[0].conclusion = "failure"
    started = await backend.start(req())
    states = [(await backend.status(started.ref)).state for _ in range(3)]
    assert states[-1] == "failed"


async def test_server_without_run_details_falls_back_to_correlation_lookup(
    gh: tuple[GitHubState, str], backend: GitHubBackend
) -> None:
    """An older server refuses return_run_details; one run starts and is found by its correlation
    id.
    """
    gh[0].run_details = False
    started = await backend.start(req("req-old"))
    assert len(gh[0].runs) == 1
    assert started.ref == str(gh[0].runs[0]["id"])
    assert (await backend.status(started.ref)).state == "queued"


async def test_retry_after_503_then_success_starts_one_run(
    gh: tuple[GitHubState, str], backend: GitHubBackend
) -> None:
    """Two 503 answers are retried; the third attempt starts exactly one run."""
    gh[0].faults.inject(Fault(status=503), Fault(status=503))
    await backend.start(req())
    assert gh[0].faults.count("POST", "/dispatches") == 3
    assert len(gh[0].runs) == 1


async def test_429_retry_after_seconds_is_honoured(
    gh: tuple[GitHubState, str], backend: GitHubBackend
) -> None:
    """A 429 with Retry-After: 1 delays the retry by at least one second, then one run starts."""
    gh[0].faults.inject(Fault(status=429, retry_after="1"))
    begin = time.monotonic()
    await backend.start(req())
    assert time.monotonic() - begin >= 1.0
    assert len(gh[0].runs) == 1


async def test_secondary_rate_limit_403_with_retry_after_is_retried_not_refused(
    gh: tuple[GitHubState, str], backend: GitHubBackend
) -> None:
    """GitHub's secondary rate limit (403 + Retry-After) waits and retries; one run starts."""
    gh[0].faults.inject(Fault(status=403, retry_after="1"))
    begin = time.monotonic()
    await backend.start(req())
    assert time.monotonic() - begin >= 1.0
    assert len(gh[0].runs) == 1


async def test_429_beyond_the_budget_is_a_definite_refusal_with_retry_after(
    gh: tuple[GitHubState, str], backend: GitHubBackend
) -> None:
    """A Retry-After longer than the retry budget ends the attempt: refused, not misconfigured, no
    run.
    """
    gh[0].faults.inject(Fault(status=429, retry_after="60"))
    with pytest.raises(BackendRefused) as info:
        await backend.start(req())
    assert not info.value.misconfigured
    assert info.value.retry_after == 60
    assert gh[0].runs == []


@pytest.mark.parametrize(
    ("case", "status"),
    [("token", "401"), ("workflow", "404"), ("branch", "422"), ("forbidden", "403")],
)
async def test_definite_refusal_raises_backend_refused_and_starts_nothing(
    gh: tuple[GitHubState, str], case: str, status: str
) -> None:
    """Bad token, unknown workflow, unknown branch or a forbidden token: BackendRefused naming the
    status.
    """
    url = gh[1]
    backend = {
        "token": make(url, token="ghp_wrongwrongwrongwrong"),
        "workflow": make(url, path="acme/site/nope.yml"),
        "branch": backend_from_url(
            f"github://acme/site/deploy.yml?ref=gone&api={url}", context({"GITHUB_TOKEN": TOKEN})
        ),
        "forbidden": make(url),
    }[case]
    if case == "forbidden":
        gh[0].faults.refusal = 403
    try:
        with pytest.raises(BackendRefused) as info:
            await backend.start(req())
    finally:
        await backend.close()
    assert info.value.misconfigured
    assert f"HTTP {status}" in str(info.value)
    assert gh[0].runs == []


@pytest.mark.parametrize("after", ["drop", "hang"])
async def test_ambiguous_start_is_uncertain_and_find_locates_the_single_run(
    gh: tuple[GitHubState, str], backend: GitHubBackend, after: str
) -> None:
    """Accepted-then-dropped or accepted-then-stalled: BackendUncertain, no retry, find() returns
    the run.
    """
    gh[0].faults.inject(Fault(after=after, seconds=1.5))
    with pytest.raises(BackendUncertain):
        await backend.start(req("req-amb"))
    assert len(gh[0].runs) == 1
    found = None
    for _ in range(20):
        found = await backend.find("req-amb")
        if found:
            break
        await asyncio.sleep(0.1)
    assert found is not None
    assert found.ref == str(gh[0].runs[0]["id"])
    assert len(gh[0].runs) == 1
    assert await backend.find("req-other") is None


async def test_ten_racing_starts_with_one_request_id_start_one_run(
    gh: tuple[GitHubState, str], backend: GitHubBackend
) -> None:
    """Ten concurrent start() calls with one request id share one dispatch and one run."""
    results = await asyncio.gather(*(backend.start(req("req-race")) for _ in range(10)))
    assert len(gh[0].runs) == 1
    assert {r.ref for r in results} == {str(gh[0].runs[0]["id"])}
    assert gh[0].faults.count("POST", "/dispatches") == 1


async def test_token_absent_from_errors_logs_and_results(
    gh: tuple[GitHubState, str], all_logs: pytest.LogCaptureFixture
) -> None:
    """Neither a refused nor a successful start puts the token in exception text, logs or
    results.
    """
    wrong = "ghp_wrongTOKENwhichMustNotLeak0123456789"
    bad, good = make(gh[1], token=wrong), make(gh[1])
    try:
        with pytest.raises(BackendRefused) as info:
            await bad.start(req())
        gh[0].faults.inject(Fault(status=503))
        started = await good.start(req("req-ok"))
        status = await good.status(started.ref)
    finally:
        await bad.close()
        await good.close()
    assert all_logs.records, "httpx logs each request at INFO/DEBUG"
    for secret in (wrong, TOKEN):
        assert_secret_absent(
            secret,
            info.value,
            repr(info.value),
            info.value.__cause__,
            all_logs.text,
            started,
            status,
        )

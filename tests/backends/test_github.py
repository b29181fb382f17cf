"""GitHub Actions backend against the contract server in tests/backends/contract/github.py."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.backends.conftest import assert_secret_absent, context
from tests.backends.contract._server import Fault, serve, serve_later
from tests.backends.contract.github import (
    MAX_INPUTS,
    SECONDARY_LIMIT,
    TOKEN,
    GitHubState,
    build_app,
    primary_limit,
)
from triggergate.backends.base import StartRequest
from triggergate.backends.github import GitHubBackend
from triggergate.errors import BackendError, BackendRefused, BackendUncertain, ConfigurationError
from triggergate.registry import backend_from_url


@pytest.fixture
def gh() -> Iterator[tuple[GitHubState, str]]:
    state = GitHubState()
    with serve(build_app(state)) as url:
        yield state, url


def make(
    url: str,
    token: str = TOKEN,
    path: str = "acme/site/deploy.yml",
    options: dict[str, Any] | None = None,
    params: tuple[str, ...] = (),
) -> GitHubBackend:
    ctx = context({"GITHUB_TOKEN": token}, **(options or {}))
    if params:
        ctx = dataclasses.replace(ctx, params=params)
    backend = backend_from_url(f"github://{path}?ref=main&api={url}", ctx)
    assert isinstance(backend, GitHubBackend)
    return backend


async def wait_for_log(logs: pytest.LogCaptureFixture, needle: str) -> None:
    """Wait (bounded) until a captured log line contains ``needle``."""
    for _ in range(200):
        if any(needle in r.getMessage() for r in logs.records):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"no log line containing {needle!r}")


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


async def test_503_after_github_accepted_the_dispatch_is_uncertain_and_never_resent(
    gh: tuple[GitHubState, str], backend: GitHubBackend
) -> None:
    """A 503 that came after GitHub started the run (a gateway losing the answer): one POST,
    BackendUncertain, one run, and find() reconciles it. Resending would start a second."""
    gh[0].faults.inject(Fault(after="error", status=503))
    with pytest.raises(BackendUncertain):
        await backend.start(req("req-503"))
    assert gh[0].faults.count("POST", "/dispatches") == 1
    assert len(gh[0].runs) == 1
    await asyncio.sleep(gh[0].list_delay)  # a new run is listed a moment later
    found = await backend.find("req-503")
    assert found is not None
    assert found.ref == str(gh[0].runs[0]["id"])


async def test_a_dispatch_github_never_received_is_sent_again_and_starts_one_run(
    all_logs: pytest.LogCaptureFixture,
) -> None:
    """Connection refused (nothing listening yet): the dispatch provably never arrived, so
    it is retried; once GitHub listens, one dispatch and one run."""
    state = GitHubState()
    with serve_later(build_app(state)) as (url, start_listening):
        backend = make(url, options={"http_attempts": 40, "http_budget": 10.0})
        try:
            task = asyncio.create_task(backend.start(req("req-late")))
            await wait_for_log(all_logs, "cannot connect")
            start_listening()
            started = await task
        finally:
            await backend.close()
    assert started.ref == str(state.runs[0]["id"])
    assert state.faults.count("POST", "/dispatches") == 1
    assert len(state.runs) == 1


async def test_429_on_a_dispatch_refuses_without_resending_and_the_next_start_waits_it_out(
    gh: tuple[GitHubState, str], backend: GitHubBackend
) -> None:
    """429 Retry-After: 1 on the dispatch: a refusal (not a misconfiguration) with
    retry_after 1, sent once. The next start waits that second out before it is sent."""
    gh[0].faults.inject(Fault(status=429, retry_after="1"))
    with pytest.raises(BackendRefused) as info:
        await backend.start(req("req-a"))
    assert not info.value.misconfigured
    assert info.value.retry_after == 1
    assert gh[0].runs == []
    begin = time.monotonic()
    await backend.start(req("req-b"))
    assert time.monotonic() - begin >= 0.9
    assert gh[0].faults.count("POST", "/dispatches") == 2
    assert len(gh[0].runs) == 1


async def test_secondary_rate_limit_403_with_retry_after_is_a_rate_limit_not_a_refusal_of_config(
    gh: tuple[GitHubState, str], backend: GitHubBackend
) -> None:
    """GitHub's secondary limit (403 + Retry-After): not misconfigured, retry_after given,
    nothing resent, nothing started."""
    gh[0].faults.inject(Fault(status=403, retry_after="2"))
    with pytest.raises(BackendRefused) as info:
        await backend.start(req())
    assert not info.value.misconfigured
    assert info.value.retry_after == 2
    assert gh[0].faults.count("POST", "/dispatches") == 1
    assert gh[0].runs == []


async def test_secondary_rate_limit_403_without_headers_backs_off_a_minute(
    gh: tuple[GitHubState, str], backend: GitHubBackend
) -> None:
    """A secondary limit with neither Retry-After nor X-RateLimit-Remaining: 0, only its
    message: a rate limit with a wait of at least one minute (GitHub's rate-limit docs),
    no operator misconfiguration. Within that minute nothing more is sent: neither a
    start nor a status read."""
    gh[0].faults.inject(SECONDARY_LIMIT)
    with pytest.raises(BackendRefused) as info:
        await backend.start(req("req-a"))
    assert not info.value.misconfigured
    assert info.value.retry_after == 60
    with pytest.raises(BackendRefused) as again:
        await backend.start(req("req-b"))
    assert not again.value.misconfigured
    assert again.value.retry_after is not None and 55 < again.value.retry_after <= 60
    with pytest.raises(BackendError) as read:
        await backend.status("30433642")
    assert not read.value.definite
    assert gh[0].faults.count("POST") == 1
    assert gh[0].faults.count("GET") == 0
    assert gh[0].runs == []


async def test_a_persisting_secondary_limit_doubles_the_wait(
    gh: tuple[GitHubState, str],
) -> None:
    """Secondary limits in a row wait exponentially longer (60 s, then 120 s), as GitHub's
    rate-limit docs ask; a fresh client is used for each so the first wait is not honoured."""
    backend = make(gh[1])
    try:
        gh[0].faults.inject(SECONDARY_LIMIT, SECONDARY_LIMIT)
        waits = []
        for rid in ("req-a", "req-b"):
            backend.http.cooldown.until = 0.0  # as if the previous wait had passed
            with pytest.raises(BackendRefused) as info:
                await backend.start(req(rid))
            waits.append(info.value.retry_after)
    finally:
        await backend.close()
    assert waits == [60, 120]


async def test_primary_rate_limit_waits_until_the_reset_time(
    gh: tuple[GitHubState, str], backend: GitHubBackend
) -> None:
    """403 with X-RateLimit-Remaining: 0: refused with retry_after up to X-RateLimit-Reset."""
    gh[0].faults.inject(primary_limit(reset_in=300))
    with pytest.raises(BackendRefused) as info:
        await backend.start(req())
    assert not info.value.misconfigured
    assert info.value.retry_after is not None and 290 <= info.value.retry_after <= 300


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


async def test_ref_selects_the_branch_and_never_travels_as_an_input(
    gh: tuple[GitHubState, str], backend: GitHubBackend
) -> None:
    """A request's ref is the dispatch's ref; the inputs are the parameters and the
    correlation id only (the workflow declares no "ref" input, and GitHub would answer
    422 to one)."""
    gh[0].branches.add("release")
    await backend.start(StartRequest("req-ref", "198.51.100.7", {"env": "prod"}, ref="release"))
    assert gh[0].dispatched[0]["ref"] == "release"
    assert gh[0].dispatched[0]["inputs"] == {"env": "prod", "triggergate_id": "req-ref"}


def test_more_inputs_than_github_takes_is_a_configuration_error() -> None:
    """25 allow-listed parameters plus the correlation input are 26 inputs, more than the
    25 GitHub takes: refused when the backend is built (check-config), key "params"."""
    names = tuple(f"p{i}" for i in range(MAX_INPUTS))
    with pytest.raises(ConfigurationError) as caught:
        make("http://127.0.0.1:9", params=names)
    assert caught.value.key == "params"
    assert "at most 25" in str(caught.value)
    make("http://127.0.0.1:9", params=("ref", *names[:-1]))  # ref is no input: 24 + 1 fit


async def test_twenty_four_parameters_and_the_correlation_input_are_accepted(
    gh: tuple[GitHubState, str],
) -> None:
    """The most a gate may allow-list (24 + the correlation input = 25) is what GitHub takes."""
    names = tuple(f"p{i}" for i in range(MAX_INPUTS - 1))
    gh[0].inputs.update(names)
    backend = make(gh[1], params=names)
    try:
        await backend.start(req("req-max", **{n: "x" for n in names}))
    finally:
        await backend.close()
    assert len(gh[0].dispatched[0]["inputs"]) == MAX_INPUTS


async def test_find_pages_through_newer_runs_and_skips_other_events(
    gh: tuple[GitHubState, str], backend: GitHubBackend
) -> None:
    """An uncertain dispatch followed by 150 other dispatches and a push run naming the same
    id: find() pages past the first 100 runs and matches only the workflow_dispatch run."""
    gh[0].faults.inject(Fault(after="drop"))
    with pytest.raises(BackendUncertain):
        await backend.start(req("req-deep"))
    ours = gh[0].runs[-1]
    for i in range(150):
        gh[0].add_run(f"req-other-{i}")
    gh[0].add_run("push mentioning req-deep", event="push")
    await asyncio.sleep(gh[0].list_delay)
    found = await backend.find("req-deep")
    assert found is not None
    assert found.ref == str(ours["id"])
    assert gh[0].faults.count("GET", "/runs") == 2


async def test_find_does_not_look_before_the_dispatch_was_sent(
    gh: tuple[GitHubState, str], backend: GitHubBackend
) -> None:
    """A run named after the request id but created long before this process sent it
    cannot be its run: find() asks GitHub only for runs created since the dispatch."""
    gh[0].faults.inject(Fault(status=503))  # not processed: no run
    with pytest.raises(BackendUncertain):
        await backend.start(req("req-late"))
    gh[0].add_run("req-late", age=3600)
    assert await backend.find("req-late") is None


@pytest.mark.parametrize(
    ("conclusion", "state"),
    [
        ("success", "succeeded"),
        ("neutral", "succeeded"),
        ("failure", "failed"),
        ("timed_out", "failed"),
        ("startup_failure", "failed"),
        ("action_required", "failed"),
        ("cancelled", "cancelled"),
        ("skipped", "superseded"),
        ("stale", "superseded"),
    ],
)
async def test_every_conclusion_maps_to_a_final_state(
    gh: tuple[GitHubState, str], backend: GitHubBackend, conclusion: str, state: str
) -> None:
    """Each conclusion GitHub documents for a completed run is final in triggergate (none
    stays "unknown"), with the meaning GitHub gives it."""
    gh[0].conclusion = conclusion
    started = await backend.start(req())
    states = [(await backend.status(started.ref)).state for _ in range(3)]
    assert states == ["queued", "running", state]

"""GitLab backend against the contract server in tests/backends/contract/gitlab.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.backends.conftest import assert_secret_absent, context
from tests.backends.contract._server import Fault, serve
from tests.backends.contract.gitlab import READ_TOKEN, STATUSES, TRIGGER_TOKEN, GitLabState, build_app
from triggergate.backends.base import StartRequest
from triggergate.backends.gitlab import GitLabBackend
from triggergate.errors import BackendRefused, BackendUncertain
from triggergate.registry import backend_from_url


@pytest.fixture
def gl() -> Iterator[tuple[GitLabState, str]]:
    state = GitLabState()
    with serve(build_app(state)) as url:
        yield state, url.removeprefix("http://")


def make(host: str, trigger: str = TRIGGER_TOKEN, ref: str = "main", extra: str = "") -> GitLabBackend:
    backend = backend_from_url(
        f"gitlab://{host}/acme/platform/site?ref={ref}&scheme=http{extra}",
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


async def test_503_after_gitlab_created_the_pipeline_is_uncertain_and_never_resent(
    gl: tuple[GitLabState, str], backend: GitLabBackend
) -> None:
    """A 503 that came after the pipeline was created: one POST, BackendUncertain, one
    pipeline, and find() reconciles it. Resending would create a second pipeline."""
    gl[0].faults.inject(Fault(after="error", status=503))
    with pytest.raises(BackendUncertain):
        await backend.start(req("req-503"))
    assert gl[0].faults.count("POST") == 1
    assert len(gl[0].pipelines) == 1
    found = await backend.find("req-503")
    assert found is not None
    assert found.ref == str(gl[0].pipelines[0]["id"])


async def test_429_with_an_http_date_refuses_the_trigger_and_the_next_waits_it_out(
    gl: tuple[GitLabState, str], backend: GitLabBackend
) -> None:
    """A 429 whose Retry-After is an HTTP date two seconds ahead: the trigger is refused
    (not resent, not a misconfiguration) with that wait; the next trigger waits it out."""
    from email.utils import formatdate

    gl[0].faults.inject(Fault(status=429, retry_after=formatdate(time.time() + 2, usegmt=True)))
    with pytest.raises(BackendRefused) as info:
        await backend.start(req("req-a"))
    assert not info.value.misconfigured
    assert info.value.retry_after is not None and 0 < info.value.retry_after <= 2
    begin = time.monotonic()
    await backend.start(req("req-b"))
    assert time.monotonic() - begin >= 0.5
    assert gl[0].faults.count("POST") == 2
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


NO_CORRELATION = "&correlation_variable="


async def test_ref_selects_the_branch_and_never_travels_as_a_variable(
    gl: tuple[GitLabState, str], backend: GitLabBackend
) -> None:
    """A request's ref is the trigger's ref; the variables are the parameters and the
    correlation id only."""
    gl[0].branches.add("develop")
    await backend.start(StartRequest("req-ref", "198.51.100.7", {"ENV": "qa"}, ref="develop"))
    assert gl[0].pipelines[0]["ref"] == "develop"
    assert gl[0].pipelines[0]["variables"] == {"ENV": "qa", "TRIGGERGATE_ID": "req-ref"}


async def test_uncertain_start_on_another_ref_is_found_on_that_ref(
    gl: tuple[GitLabState, str], backend: GitLabBackend
) -> None:
    """An uncertain start on "develop" (the backend's default ref is main) is found, by this
    process and by a fresh one that never saw the attempt."""
    gl[0].branches.add("develop")
    gl[0].faults.inject(Fault(after="drop"))
    with pytest.raises(BackendUncertain):
        await backend.start(StartRequest("req-dev", "198.51.100.7", ref="develop"))
    pipeline_id = str(gl[0].pipelines[0]["id"])
    found = await backend.find("req-dev")
    assert found is not None and found.ref == pipeline_id
    fresh = make(gl[1])
    try:
        again = await fresh.find("req-dev")
    finally:
        await fresh.close()
    assert again is not None and again.ref == pipeline_id


async def test_a_project_refusing_pipeline_variables_refuses_the_correlation_variable(
    gl: tuple[GitLabState, str], backend: GitLabBackend
) -> None:
    """GitLab.com's default for new projects (no one may set pipeline variables): a trigger
    with the correlation variable is a 400; BackendRefused tells the operator what to change."""
    gl[0].variables_allowed = False
    with pytest.raises(BackendRefused) as info:
        await backend.start(req())
    assert info.value.misconfigured
    assert "correlation_variable=" in str(info.value)
    assert gl[0].pipelines == []


async def test_without_the_correlation_variable_a_project_refusing_variables_starts_pipelines(
    gl: tuple[GitLabState, str],
) -> None:
    """correlation_variable= sends no variable: the same project starts the pipeline, whose
    id comes from the trigger's 201 answer."""
    gl[0].variables_allowed = False
    backend = make(gl[1], extra=NO_CORRELATION)
    try:
        started = await backend.start(req())
    finally:
        await backend.close()
    assert started.ref == str(gl[0].pipelines[0]["id"])
    assert gl[0].pipelines[0]["variables"] == {}


async def test_without_the_correlation_variable_an_uncertain_start_is_the_only_new_pipeline(
    gl: tuple[GitLabState, str],
) -> None:
    """Correlation off: an uncertain start is matched to the one trigger pipeline on its ref
    created since the attempt that no other request of this process holds; an older one,
    one on another ref, one from a push and one already matched do not count."""
    gl[0].variables_allowed = False
    gl[0].branches.add("develop")
    backend = make(gl[1], extra=NO_CORRELATION)
    try:
        gl[0].add_pipeline("develop", age=3600)  # long before the attempt
        earlier = await backend.start(StartRequest("req-0", "c", ref="develop"))
        gl[0].add_pipeline("main")
        gl[0].add_pipeline("develop", source="push")
        gl[0].faults.inject(Fault(after="drop"))
        with pytest.raises(BackendUncertain):
            await backend.start(StartRequest("req-amb", "c", ref="develop"))
        found = await backend.find("req-amb")
        assert await backend.find("req-0") is not None  # its own, from the 201
        fresh = make(gl[1], extra=NO_CORRELATION)
        unknown = await fresh.find("req-amb")
        await fresh.close()
    finally:
        await backend.close()
    assert found is not None
    assert found.ref == str(gl[0].pipelines[-1]["id"])
    assert found.ref != earlier.ref
    assert unknown is None  # a process that never made the attempt cannot tell


async def test_without_the_correlation_variable_two_candidates_count_as_not_started(
    gl: tuple[GitLabState, str],
) -> None:
    """Correlation off and two unclaimed trigger pipelines on the ref since the attempt (a
    shared trigger token): no guess, find() returns None."""
    backend = make(gl[1], extra=NO_CORRELATION)
    try:
        gl[0].faults.inject(Fault(after="drop"))
        with pytest.raises(BackendUncertain):
            await backend.start(req("req-amb"))
        gl[0].add_pipeline("main")  # someone else's trigger with the same token
        assert await backend.find("req-amb") is None
    finally:
        await backend.close()


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("created", "queued"),
        ("waiting_for_resource", "queued"),
        ("preparing", "queued"),
        ("waiting_for_callback", "queued"),
        ("pending", "queued"),
        ("scheduled", "queued"),
        ("manual", "queued"),
        ("running", "running"),
        ("canceling", "running"),
        ("success", "succeeded"),
        ("failed", "failed"),
        ("canceled", "cancelled"),
        ("skipped", "superseded"),
    ],
)
async def test_every_gitlab_status_maps_to_its_state(
    gl: tuple[GitLabState, str], backend: GitLabBackend, status: str, state: str
) -> None:
    """Each status GitLab gives a pipeline has a state: waiting_for_callback is not yet
    running, canceling is not yet final (it ends as canceled)."""
    gl[0].phases = [status]
    started = await backend.start(req())
    assert (await backend.status(started.ref)).state == state


def test_the_status_table_covers_every_gitlab_status() -> None:
    """No GitLab status is left unmapped (an unmapped one reads as unknown forever)."""
    from triggergate.backends.gitlab import STATES

    assert set(STATES) == set(STATUSES)


def test_notes_say_what_the_correlation_choice_costs() -> None:
    """check-config's notes name the cost of each choice."""
    on, off = make("gitlab.example.com"), make("gitlab.example.com", extra=NO_CORRELATION)
    assert "must allow pipeline variables" in " ".join(on.notes())
    assert "counts as not started" in " ".join(off.notes())

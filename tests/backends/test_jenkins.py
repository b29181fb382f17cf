"""Jenkins backend against the contract server in tests/backends/contract/jenkins.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.backends.conftest import assert_secret_absent, context
from tests.backends.contract._server import Fault, serve
from tests.backends.contract.jenkins import TOKEN, USER, JenkinsState, build_app
from triggergate.backends.base import StartRequest
from triggergate.backends.jenkins import JenkinsBackend
from triggergate.errors import BackendRefused, BackendUncertain, ConfigurationError
from triggergate.registry import Context, backend_from_url


@pytest.fixture
def jk() -> Iterator[tuple[JenkinsState, str]]:
    state = JenkinsState()
    with serve(build_app(state)) as url:
        yield state, url.removeprefix("http://")


def make(host: str, token: str = TOKEN, job: str = "job/web/job/deploy") -> JenkinsBackend:
    backend = backend_from_url(
        f"jenkins+http://{host}/{job}", context({"JENKINS_USER": USER, "JENKINS_TOKEN": token})
    )
    assert isinstance(backend, JenkinsBackend)
    return backend


@pytest.fixture
async def backend(jk: tuple[JenkinsState, str]) -> AsyncIterator[JenkinsBackend]:
    b = make(jk[1])
    yield b
    await b.close()


def req(rid: str = "req-1", **params: str) -> StartRequest:
    return StartRequest(request_id=rid, client="198.51.100.7", params=params)


async def test_start_queues_item_and_status_follows_it_to_a_successful_build(
    jk: tuple[JenkinsState, str], backend: JenkinsBackend
) -> None:
    """queue:N resolves through the queue item to the build: queued, queued, running, succeeded."""
    started = await backend.start(req(ENV="prod"))
    item = jk[0].queue[0]
    assert started.ref == f"queue:{item['id']}"
    assert item["params"] == {"ENV": "prod", "TRIGGERGATE_ID": "req-1"}
    seen = [await backend.status(started.ref) for _ in range(4)]
    assert [s.state for s in seen] == ["queued", "queued", "running", "succeeded"]
    assert seen[-1].url is not None
    assert seen[-1].url.endswith("/job/web/job/deploy/1/")


@pytest.mark.parametrize(
    ("result", "state"),
    [
        ("FAILURE", "failed"),
        ("ABORTED", "cancelled"),
        ("UNSTABLE", "failed"),
        ("NOT_BUILT", "superseded"),
    ],
)
async def test_build_results_map_to_common_states(
    jk: tuple[JenkinsState, str], backend: JenkinsBackend, result: str, state: str
) -> None:
    """Each Jenkins result maps to its documented common state."""
    jk[0].result = result
    started = await backend.start(req())
    assert [(await backend.status(started.ref)).state for _ in range(4)][-1] == state


async def test_crumb_is_fetched_when_asked_for_and_reused(
    jk: tuple[JenkinsState, str], backend: JenkinsBackend
) -> None:
    """A 403 naming the crumb fetches it once; the retried and later starts carry it; one build
    each.
    """
    jk[0].crumb_required = True
    await backend.start(req("req-a"))
    await backend.start(req("req-b"))
    assert len(jk[0].queue) == 2
    assert jk[0].faults.count("GET", "/crumbIssuer") == 1
    assert jk[0].faults.count("POST", "/buildWithParameters") == 3


async def test_forgotten_queue_item_is_resolved_by_queue_id(
    jk: tuple[JenkinsState, str], backend: JenkinsBackend
) -> None:
    """When Jenkins drops a left queue item, a fresh backend finds the build by its queueId."""
    jk[0].forget_queue = True
    started = await backend.start(req())
    for _ in range(2):
        await backend.status(started.ref)
    fresh = make(jk[1])
    try:
        status = await fresh.status(started.ref)
    finally:
        await fresh.close()
    assert status.state == "running"
    assert status.url is not None
    assert status.url.endswith("/1/")


async def test_503_after_jenkins_queued_the_build_is_uncertain_and_never_resent(
    jk: tuple[JenkinsState, str], backend: JenkinsBackend
) -> None:
    """A 503 that came after the item was queued: one POST, BackendUncertain, one item,
    and find() reconciles it."""
    jk[0].faults.inject(Fault(after="error", status=503))
    with pytest.raises(BackendUncertain):
        await backend.start(req("req-503"))
    assert jk[0].faults.count("POST") == 1
    assert len(jk[0].queue) == 1
    found = await backend.find("req-503")
    assert found is not None and found.ref == f"queue:{jk[0].queue[0]['id']}"


async def test_429_refuses_the_build_and_the_next_start_waits_it_out(
    jk: tuple[JenkinsState, str], backend: JenkinsBackend
) -> None:
    """A 429 with Retry-After: 1 (a proxy in front of Jenkins): refused, not resent, not a
    misconfiguration; the next start waits the second out and queues one item."""
    jk[0].faults.inject(Fault(status=429, retry_after="1"))
    with pytest.raises(BackendRefused) as info:
        await backend.start(req("req-a"))
    assert not info.value.misconfigured and info.value.retry_after == 1
    begin = time.monotonic()
    await backend.start(req("req-b"))
    assert time.monotonic() - begin >= 0.9
    assert len(jk[0].queue) == 1


async def test_a_request_merged_into_a_waiting_item_joins_it(
    jk: tuple[JenkinsState, str], backend: JenkinsBackend
) -> None:
    """Jenkins answers 303 See Other when the request was merged into a waiting queue item
    (ParametersDefinitionProperty.buildWithParameters): that item is the run, not a
    refusal."""
    jk[0].params = {"ENV": "staging"}  # a job without the correlation parameter
    first = await backend.start(req("req-a"))
    second = await backend.start(req("req-b"))
    assert jk[0].faults.count("POST", "/buildWithParameters") == 2
    assert first.ref == second.ref == f"queue:{jk[0].queue[0]['id']}"
    assert len(jk[0].queue) == 1


async def test_nothing_queued_is_a_definite_refusal(
    jk: tuple[JenkinsState, str], backend: JenkinsBackend
) -> None:
    """302 to the job (schedule2 refused by a queue decision handler): no item exists, so
    BackendRefused for the operator."""
    jk[0].veto = True
    with pytest.raises(BackendRefused) as info:
        await backend.start(req())
    assert info.value.misconfigured and "HTTP 302" in str(info.value)
    assert jk[0].queue == []


async def test_a_disabled_job_is_a_definite_refusal(
    jk: tuple[JenkinsState, str], backend: JenkinsBackend
) -> None:
    """409 "is not buildable" (ParameterizedJobMixIn): BackendRefused naming the status."""
    jk[0].buildable = False
    with pytest.raises(BackendRefused, match="HTTP 409"):
        await backend.start(req())
    assert jk[0].queue == []


async def test_the_ref_is_the_job_parameter_ref_param_names(jk: tuple[JenkinsState, str]) -> None:
    """With ref_param=BRANCH a request's ref fills the job's BRANCH parameter; it is no
    other parameter."""
    jk[0].params["BRANCH"] = "main"
    backend = make(jk[1], job="job/web/job/deploy?ref_param=BRANCH")
    try:
        await backend.start(StartRequest("req-ref", "c", {"ENV": "qa"}, ref="release/2"))
    finally:
        await backend.close()
    assert jk[0].queue[0]["params"] == {"ENV": "qa", "TRIGGERGATE_ID": "req-ref", "BRANCH": "release/2"}


def test_allow_listing_ref_without_ref_param_is_a_configuration_error() -> None:
    """A job takes a ref only as a parameter: allow-listing ref without ref_param is refused
    when the backend is built (check-config), key "params"."""
    ctx = Context(environ={}, params=("ref", "ENV"))
    with pytest.raises(ConfigurationError) as caught:
        backend_from_url("jenkins+https://ci.example.com/job/deploy", ctx)
    assert caught.value.key == "params"
    backend_from_url("jenkins+https://ci.example.com/job/deploy?ref_param=BRANCH", ctx)


@pytest.mark.parametrize(("case", "status"), [("token", "401"), ("job", "404"), ("forbidden", "403")])
async def test_definite_refusal_raises_backend_refused_and_queues_nothing(
    jk: tuple[JenkinsState, str], case: str, status: str
) -> None:
    """A wrong token, a missing job, or a 403 that is not about crumbs: BackendRefused naming the
    status.
    """
    backend = {
        "token": make(jk[1], token="wrong-token-000"),
        "job": make(jk[1], job="job/nope"),
        "forbidden": make(jk[1]),
    }[case]
    if case == "forbidden":
        jk[0].faults.refusal = 403
    try:
        with pytest.raises(BackendRefused) as info:
            await backend.start(req())
    finally:
        await backend.close()
    assert info.value.misconfigured
    assert f"HTTP {status}" in str(info.value)
    assert jk[0].queue == []


@pytest.mark.parametrize("after", ["drop", "hang"])
async def test_ambiguous_start_is_uncertain_and_find_locates_the_single_item(
    jk: tuple[JenkinsState, str], backend: JenkinsBackend, after: str
) -> None:
    """Accepted-then-lost: BackendUncertain; find() returns the queue item, then the build once it
    runs.
    """
    jk[0].faults.inject(Fault(after=after, seconds=1.5))
    with pytest.raises(BackendUncertain):
        await backend.start(req("req-amb"))
    found = await backend.find("req-amb")
    assert found is not None
    assert found.ref == f"queue:{jk[0].queue[0]['id']}"
    for _ in range(2):
        await backend.status(found.ref)
    later = await backend.find("req-amb")
    assert later is not None
    assert later.ref == "build:1"
    assert await backend.find("req-never") is None
    assert len(jk[0].queue) == 1


async def test_ten_racing_starts_with_one_request_id_queue_one_build(
    jk: tuple[JenkinsState, str], backend: JenkinsBackend
) -> None:
    """Ten concurrent start() calls with one request id share one POST and one queue item."""
    results = await asyncio.gather(*(backend.start(req("req-race")) for _ in range(10)))
    assert len(jk[0].queue) == 1
    assert {r.ref for r in results} == {f"queue:{jk[0].queue[0]['id']}"}


async def test_second_process_with_same_request_id_joins_the_queued_item(
    jk: tuple[JenkinsState, str], backend: JenkinsBackend
) -> None:
    """Jenkins merges an identical queued request, so another instance's start gets the same
    item.
    """
    first = await backend.start(req("req-twice"))
    other = make(jk[1])
    try:
        second = await other.start(req("req-twice"))
    finally:
        await other.close()
    assert first.ref == second.ref
    assert len(jk[0].queue) == 1


async def test_token_absent_from_errors_logs_and_results(
    jk: tuple[JenkinsState, str], all_logs: pytest.LogCaptureFixture
) -> None:
    """The API token appears in no exception text, log line or result."""
    wrong = "11wrongTOKENwhichMustNotLeak0123456789"
    bad, good = make(jk[1], token=wrong), make(jk[1])
    jk[0].crumb_required = True
    try:
        with pytest.raises(BackendRefused) as info:
            await bad.start(req())
        started = await good.start(req("req-ok"))
        statuses = [await good.status(started.ref) for _ in range(3)]
        found = await good.find("req-ok")
    finally:
        await bad.close()
        await good.close()
    assert all_logs.records
    for secret in (wrong, TOKEN):
        assert_secret_absent(
            secret, info.value, info.value.__cause__, all_logs.text, started, statuses, found
        )

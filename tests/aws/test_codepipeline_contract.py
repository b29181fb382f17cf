"""The CodePipeline backend, and the flow in front of it, against a contract server that
answers as botocore's CodePipeline service model says (tests/aws/codepipeline_contract.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.aws.codepipeline_contract import STATUSES, CodePipelineState, serve
from tests.servers.aws import REGION, fake_aws_env
from triggergate.backends.base import FINAL_STATES, StartRequest
from triggergate.backends.codepipeline import STATES, CodePipelineBackend
from triggergate.clock import ManualClock
from triggergate.errors import BackendError, BackendRefused, ConfigurationError
from triggergate.models import TriggerRequest
from triggergate.registry import Context, backend_from_url
from triggergate.service import Service
from triggergate.settings import Settings
from triggergate.wiring import build_service

FAST = {"http_timeout": 1.0, "http_budget": 3.0, "http_backoff": 0.02, "http_attempts": 4}


@pytest.fixture
def cp() -> Iterator[tuple[CodePipelineState, str]]:
    state = CodePipelineState()
    with fake_aws_env(), serve(state) as url:
        yield state, url


def make(url: str, extra: str = "", params: tuple[str, ...] = ()) -> CodePipelineBackend:
    ctx = Context(environ={}, options=FAST, params=params)
    backend = backend_from_url(f"codepipeline://deploy?region={REGION}&endpoint_url={url}{extra}", ctx)
    assert isinstance(backend, CodePipelineBackend)
    return backend


def req(rid: str = "req-1", ref: str | None = None, **params: str) -> StartRequest:
    return StartRequest(rid, "203.0.113.4", params, ref=ref)


async def test_a_busy_pipeline_is_retried_with_the_same_token_and_starts_once(
    cp: tuple[CodePipelineState, str],
) -> None:
    """ConflictException ("the pipeline is busy ... Try again later") twice, then accepted:
    retried with the same clientRequestToken, one execution."""
    cp[0].faults = ["ConflictException", "ConflictException"]
    started = await make(cp[1]).start(req("req-busy"))
    assert cp[0].starts() == 3
    assert {body["clientRequestToken"] for _, body in cp[0].requests} == {"req-busy"}
    assert [e["id"] for e in cp[0].executions] == [started.ref]


@pytest.mark.parametrize("code", ["ConflictException", "ConcurrentPipelineExecutionsLimitExceededException"])
async def test_a_pipeline_busy_beyond_the_budget_is_refused_for_now_not_misconfigured(
    cp: tuple[CodePipelineState, str], code: str
) -> None:
    """Busy on every attempt: retried to the end of the budget, then a definite refusal that
    is no misconfiguration and carries a retry-after; no execution."""
    cp[0].always = code
    with pytest.raises(BackendRefused) as caught:
        await make(cp[1]).start(req())
    assert caught.value.definite and not caught.value.misconfigured
    assert caught.value.retry_after is not None and caught.value.retry_after >= 1
    assert cp[0].starts() == FAST["http_attempts"]
    assert cp[0].executions == []


async def test_an_empty_variable_value_is_refused_before_anything_is_sent(
    cp: tuple[CodePipelineState, str],
) -> None:
    """A value below PipelineVariableValue's minimum length 1: botocore refuses it before
    sending (ParamValidationError), so the failure is definite and nothing reaches AWS."""
    with pytest.raises(BackendRefused) as caught:
        await make(cp[1]).start(req(TARGET=""))
    assert caught.value.misconfigured
    assert "ParamValidationError" in str(caught.value)
    assert cp[0].requests == []


async def test_missing_credentials_are_a_definite_refusal(
    cp: tuple[CodePipelineState, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No AWS credentials anywhere: botocore cannot sign, nothing is sent, the failure is
    definite (the slot goes back at once) and names the problem."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(BackendRefused) as caught:
        await make(cp[1]).start(req())
    assert caught.value.misconfigured and caught.value.definite
    assert "NoCredentialsError" in str(caught.value)
    assert cp[0].requests == []


async def test_an_undeclared_variable_is_a_validation_refusal(cp: tuple[CodePipelineState, str]) -> None:
    """A variable the V2 pipeline does not declare: ValidationException, a misconfiguration."""
    with pytest.raises(BackendRefused) as caught:
        await make(cp[1]).start(req(UNDECLARED="x"))
    assert caught.value.misconfigured and "ValidationException" in str(caught.value)
    assert cp[0].executions == []


async def test_the_same_token_twice_is_one_execution(cp: tuple[CodePipelineState, str]) -> None:
    """clientRequestToken is an idempotency token: two processes starting one request id
    get one execution."""
    first = await make(cp[1]).start(req("req-twice"))
    second = await make(cp[1]).start(req("req-twice"))
    assert first.ref == second.ref
    assert len(cp[0].executions) == 1


async def test_stopping_is_not_final_and_ends_cancelled(cp: tuple[CodePipelineState, str]) -> None:
    """Stopping is transitional (the execution is still stopping): running, then Stopped is
    cancelled."""
    cp[0].statuses = ["InProgress", "Stopping", "Stopped"]
    backend = make(cp[1])
    started = await backend.start(req())
    states = [(await backend.status(started.ref)).state for _ in range(3)]
    assert states == ["running", "running", "cancelled"]
    assert "running" not in FINAL_STATES


def test_every_modelled_status_has_a_state() -> None:
    """Each PipelineExecutionStatus of the service model maps to the common vocabulary."""
    assert set(STATES) == set(STATUSES)
    assert STATES["Stopping"] == "running"


async def test_a_ref_overrides_the_source_revision_and_is_no_variable(
    cp: tuple[CodePipelineState, str],
) -> None:
    """With source_action, a request's ref is a sourceRevisions override; variables carry
    the parameters only."""
    await make(cp[1], "&source_action=Source").start(req(ref="0123abc", TARGET="prod"))
    execution = cp[0].executions[0]
    assert execution["sourceRevisions"] == [
        {"actionName": "Source", "revisionType": "COMMIT_ID", "revisionValue": "0123abc"}
    ]
    [(_, sent)] = cp[0].requests
    assert sent["variables"] == [{"name": "TARGET", "value": "prod"}]


def test_allow_listing_ref_without_a_source_action_is_a_configuration_error() -> None:
    """Without source_action a pipeline takes no ref: allow-listing ref is refused at
    configuration time, key "params"."""
    with pytest.raises(ConfigurationError) as caught:
        make("http://127.0.0.1:9", params=("ref",))
    assert caught.value.key == "params"
    make("http://127.0.0.1:9", "&source_action=Source", params=("ref",))


def _service(url: str, extra: str = "") -> Service:
    settings = Settings(
        store="memory://",
        pipeline=f"codepipeline://deploy?region={REGION}&endpoint_url={url}{extra}",
        notify=["log://"],
        limits=["3/7d"],
        coalesce=False,
        pipeline_options=FAST,
        params={"ref": {"choices": ["main", "0123abc"]}, "target": {"default": "staging"}},
    )
    return build_service(settings, ManualClock())


async def test_a_pressed_ref_reaches_the_source_revision_not_the_variables(
    cp: tuple[CodePipelineState, str],
) -> None:
    """Through the whole flow: {"ref": "0123abc"} starts one execution at that revision;
    the pipeline (which declares no "ref" variable and would refuse one) gets only target."""
    service = _service(cp[1], "&source_action=Source")
    outcome = await service.trigger(TriggerRequest("203.0.113.9", [], "rid-ref", payload={"ref": "0123abc"}))
    assert outcome.status == 202, outcome.body
    execution = cp[0].executions[0]
    assert execution["sourceRevisions"][0]["revisionValue"] == "0123abc"
    assert "ref" not in {v["name"] for v in execution["variables"]}


async def test_a_definite_failure_that_is_no_refusal_gives_the_slot_back_at_once(
    cp: tuple[CodePipelineState, str],
) -> None:
    """Throttled beyond the budget is BackendError(definite=True), not BackendRefused: the
    press gets 502 and its slot back at once, without waiting for the reconciler."""
    cp[0].always = "ThrottlingException"
    service = _service(cp[1], "&source_action=Source")
    refused = await service.trigger(TriggerRequest("203.0.113.9", [], "rid-1"))
    quota = await service.quota(TriggerRequest("203.0.113.9", [], "rid-2"))
    assert refused.status == 502
    assert refused.body["error"] == "pipeline_unavailable"
    assert quota.body["remaining"] == 3
    assert cp[0].executions == []
    backend = make(cp[1])
    with pytest.raises(BackendError) as caught:
        await backend.start(req())
    assert caught.value.definite and not isinstance(caught.value, BackendRefused)

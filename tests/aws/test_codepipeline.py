"""The CodePipeline backend against moto, and against a local server that throttles."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.servers.aws import REGION, create_pipeline
from triggergate.backends.base import StartRequest
from triggergate.backends.codepipeline import STATES, CodePipelineBackend
from triggergate.clock import ManualClock
from triggergate.errors import (
    BackendCannotFind,
    BackendError,
    BackendRefused,
    BackendUncertain,
    ConfigurationError,
)
from triggergate.models import TriggerRequest
from triggergate.registry import Context, backend_from_url
from triggergate.settings import Settings
from triggergate.wiring import build_service

FAST = {"http_timeout": 1.0, "http_budget": 5.0, "http_backoff": 0.05, "http_attempts": 4}


def _backend(url: str) -> CodePipelineBackend:
    backend = backend_from_url(url, Context(environ={}, options=FAST))
    assert isinstance(backend, CodePipelineBackend)
    return backend


async def test_start_passes_token_variables_and_reads_status(moto: str) -> None:
    """A start uses the request id as token, params as variables; the status maps Succeeded."""
    client = create_pipeline(moto)
    backend = _backend(f"codepipeline://deploy?region={REGION}&endpoint_url={moto}")
    started = await backend.start(StartRequest("req-1", "203.0.113.4", {"TARGET": "staging"}))
    execution = client.get_pipeline_execution(pipelineName="deploy", pipelineExecutionId=started.ref)
    variables = execution["pipelineExecution"]["variables"]
    assert variables == [{"name": "TARGET", "resolvedValue": "staging"}]
    status = await backend.status(started.ref)
    assert status.state == "succeeded"  # moto finishes executions at once
    assert started.url is not None
    assert started.url.startswith(f"https://{REGION}.console.aws.amazon.com/codesuite/")
    assert started.url.count(started.ref) == 1


async def test_find_recognises_the_execution_by_the_request_variable(moto: str) -> None:
    """With request_variable, find() locates the run a request started, and no other."""
    create_pipeline(moto)
    url = f"codepipeline://deploy?region={REGION}&endpoint_url={moto}&request_variable=TRIGGERGATE_REQUEST_ID"
    backend = _backend(url)
    first = await backend.start(StartRequest("req-a", "203.0.113.4"))
    await backend.start(StartRequest("req-b", "203.0.113.5"))
    found = await backend.find("req-a")
    assert found is not None
    assert found.ref == first.ref
    assert await backend.find("req-never") is None


async def test_find_without_request_variable_cannot_tell(moto: str) -> None:
    """Without a correlation variable find() cannot match an execution to a request, and says
    it cannot tell (BackendCannotFind), never "not started" (None)."""
    create_pipeline(moto)
    backend = _backend(f"codepipeline://deploy?region={REGION}&endpoint_url={moto}")
    await backend.start(StartRequest("req-a", "203.0.113.4"))
    with pytest.raises(BackendCannotFind):
        await backend.find("req-a")


async def test_uncertain_start_without_request_variable_is_held_never_refunded(
    moto: str, tmp_path: Path
) -> None:
    """A start answered only with 5xx (it may have run) on a pipeline without a request
    variable: the press gets 502, and the reconciler, unable to ask, keeps the slot counted,
    audits 'uncertain' and alerts the operator, instead of refunding a run that may be running."""
    with fake_codepipeline([(500, {"__type": "InternalError"})] * 10) as (url, _):
        settings = Settings(
            store=f"dynamodb://gate?region={REGION}&endpoint_url={moto}&create_table=true",
            pipeline=f"codepipeline://deploy?region={REGION}&endpoint_url={url}",
            pipeline_options=FAST,
            notify=["log://"],
            limits=["3/7d"],
            backend_timeout=10,
            reconcile_after=20,
            coalesce=False,
            state_dir=tmp_path,
        )
        clock = ManualClock(time.time())
        svc = build_service(settings, clock)
        await svc.store.open()
        press = TriggerRequest(peer="203.0.113.7", headers=[], request_id="r-uncertain")
        assert (await svc.trigger(press)).status == 502
        clock.advance(21)
        assert await svc.reconcile() == 1
        quota = await svc.quota(TriggerRequest(peer="203.0.113.7", headers=[], request_id="q"))
        audits = await svc.store.query("audit", since=0, until=clock() + 1, limit=50)
        pending = await svc.store.pending(clock() + 1)
        alerts = await svc.store.claim(clock(), 60, 50)
        await svc.close()
    assert quota.body["remaining"] == 2
    events = [a["event"] for a in audits if a.get("request_id") == "r-uncertain"]
    assert "uncertain" in events and "refunded" not in events
    assert pending == []
    assert "uncertain" in [a.payload["event"] for a in alerts]


async def test_missing_pipeline_is_a_misconfiguration_without_internals(moto: str) -> None:
    """PipelineNotFound -> BackendRefused(misconfigured), an operator hint, no ARN or account."""
    backend = _backend(f"codepipeline://absent?region={REGION}&endpoint_url={moto}")
    with pytest.raises(BackendRefused) as caught:
        await backend.start(StartRequest("req-1", "203.0.113.4"))
    assert caught.value.misconfigured
    assert caught.value.definite
    assert "does not exist" in str(caught.value)
    assert "arn:" not in str(caught.value)
    assert "123456789012" not in str(caught.value)


def test_every_aws_status_has_a_state() -> None:
    """The seven documented execution statuses map to the common vocabulary (Stopping is
    still under way: it ends Stopped)."""
    assert STATES == {
        "InProgress": "running",
        "Stopping": "running",
        "Stopped": "cancelled",
        "Cancelled": "cancelled",
        "Succeeded": "succeeded",
        "Superseded": "superseded",
        "Failed": "failed",
    }


@pytest.mark.parametrize(
    "url",
    [
        "codepipeline://?region=us-east-1",
        "codepipeline://deploy",
        "codepipeline://deploy?region=us-east-1&branch=main",
        "codepipeline://deploy?region=us-east-1&revision=abc",
        "codepipeline://a/b?region=us-east-1",
    ],
)
def test_invalid_urls_are_configuration_errors(url: str) -> None:
    """Malformed pipeline URLs are refused at configuration time with key "pipeline"."""
    with pytest.raises(ConfigurationError) as caught:
        backend_from_url(url, Context(environ={}))
    assert caught.value.key == "pipeline"


# -- a local server speaking CodePipeline's JSON protocol, with failures on demand ------------


@contextmanager
def fake_codepipeline(
    answers: list[tuple[int, dict[str, Any]]],
) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Answer each request with the next (status, body); yields its URL and the requests seen."""
    seen: list[dict[str, Any]] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with lock:
                seen.append({"target": self.headers.get("X-Amz-Target"), **body})
                status, answer = answers.pop(0) if answers else (500, {"__type": "InternalError"})
            payload = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/x-amz-json-1.1")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


THROTTLED = (400, {"__type": "ThrottlingException", "message": "Rate exceeded"})


@pytest.fixture(autouse=True)
def _fake_credentials(moto_endpoint: str) -> None:
    """The session fixture sets fake AWS credentials; every test here relies on them."""


async def test_throttled_twice_then_accepted_starts_one_execution() -> None:
    """Two ThrottlingExceptions then success: one execution, every attempt with the same token."""
    answers = [THROTTLED, THROTTLED, (200, {"pipelineExecutionId": "exec-1"})]
    with fake_codepipeline(answers) as (url, seen):
        backend = _backend(f"codepipeline://deploy?region={REGION}&endpoint_url={url}")
        started = await backend.start(StartRequest("req-42", "203.0.113.4"))
    assert started.ref == "exec-1"
    assert [r["target"] for r in seen] == ["CodePipeline_20150709.StartPipelineExecution"] * 3
    assert {r["clientRequestToken"] for r in seen} == {"req-42"}


async def test_throttled_beyond_the_budget_is_a_definite_failure() -> None:
    """Always throttled: BackendError that is definite (no run started), after bounded attempts."""
    with fake_codepipeline([THROTTLED] * 10) as (url, seen):
        backend = _backend(f"codepipeline://deploy?region={REGION}&endpoint_url={url}")
        with pytest.raises(BackendError) as caught:
            await backend.start(StartRequest("req-1", "203.0.113.4"))
    assert caught.value.definite
    assert not isinstance(caught.value, BackendRefused)
    assert len(seen) == FAST["http_attempts"]


async def test_server_errors_that_persist_leave_the_start_uncertain() -> None:
    """5xx on every attempt: the run may exist, so BackendUncertain (reconcile, never refund)."""
    with fake_codepipeline([(500, {"__type": "InternalError"})] * 10) as (url, seen):
        backend = _backend(f"codepipeline://deploy?region={REGION}&endpoint_url={url}")
        with pytest.raises(BackendUncertain):
            await backend.start(StartRequest("req-1", "203.0.113.4"))
    assert len(seen) == FAST["http_attempts"]


async def test_source_revision_and_variables_are_sent_as_aws_documents() -> None:
    """source_action + ref become sourceRevisions; params and the request id become variables."""
    url_opts = "source_action=Source&request_variable=TG_ID"
    with fake_codepipeline([(200, {"pipelineExecutionId": "exec-9"})]) as (url, seen):
        backend = _backend(f"codepipeline://deploy?region={REGION}&endpoint_url={url}&{url_opts}")
        await backend.start(StartRequest("req-9", "203.0.113.4", {"TARGET": "prod"}, ref="0123abc"))
    assert seen[0]["sourceRevisions"] == [
        {"actionName": "Source", "revisionType": "COMMIT_ID", "revisionValue": "0123abc"}
    ]
    assert seen[0]["variables"] == [
        {"name": "TARGET", "value": "prod"},
        {"name": "TG_ID", "value": "req-9"},
    ]

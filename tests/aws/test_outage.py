"""DynamoDB unreachable: the Lambda and the server answer 503 within store_timeout + 0.2 s.

Two ways to be unreachable: a port that accepts connections and never answers
(a stalled endpoint: the client waits for its own timeouts) and a closed port
(refused at once, then botocore's retry backoff). Either way a public answer
may wait for one store deadline, never two, and never for alert delivery;
``/healthz`` never waits for the store at all.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from tests.aws.samples import http_event
from tests.aws.test_lambda_runtime import containers, template_env
from tests.servers.app import start_app
from tests.servers.aws import FAKE_ENV, REGION, create_pipeline, dynalite_process, fake_aws_env
from tests.servers.blackhole import blackhole, closed_port
from triggergate.aws.dynamodb_schema import create_table

pytestmark = [pytest.mark.dynamodb, pytest.mark.slow]

STORE_TIMEOUT = 0.8  # the default
BOUND = STORE_TIMEOUT + 0.2
CLIENT = "198.51.100.60"


@pytest.fixture(params=["silent", "closed"])
def unreachable(request: pytest.FixtureRequest) -> Iterator[str]:
    """The endpoint URL of a DynamoDB that cannot be reached, one way or the other."""
    if request.param == "silent":
        with blackhole() as hole:
            yield hole.url
    else:
        yield f"http://127.0.0.1:{closed_port()}"


def test_lambda_answers_503_within_the_store_deadline_cold_and_warm(
    unreachable: str, moto: str, tmp_path: Path
) -> None:
    """The cold press, a warm press, GET /quota and GET /runs/{id} each answer 503 within
    store_timeout + 0.2 s of handler time; /healthz answers 200 without waiting for the store;
    no pipeline starts."""
    pipelines = create_pipeline(moto)
    env = template_env(f"dynamodb://gate?endpoint_url={unreachable}&ttl_attribute=ttl", moto, tmp_path)
    with containers(env) as [box]:
        answers = {
            "cold press": box.invoke(http_event("sam-http", "POST", "/trigger", source_ip=CLIENT)),
            "warm press": box.invoke(http_event("sam-rest", "POST", "/trigger", source_ip=CLIENT, body="{}")),
            "quota": box.invoke(http_event("powertools-http", "GET", "/quota", source_ip=CLIENT)),
            "run": box.invoke(http_event("powertools-rest", "GET", "/runs/abc123", source_ip=CLIENT)),
        }
        health = box.invoke(http_event("sam-http", "GET", "/healthz", source_ip=CLIENT))
    for name, answer in answers.items():
        assert (answer.status, answer.json()["error"]) == (503, "unavailable"), name
        assert answer.duration <= BOUND, f"{name}: 503 after {answer.duration:.2f}s"
    assert health.status == 200
    assert health.duration < STORE_TIMEOUT / 2, f"/healthz took {health.duration:.2f}s"
    assert pipelines.list_pipeline_executions(pipelineName="deploy")["pipelineExecutionSummaries"] == []


def _timed(client: httpx.Client, method: str, path: str, **kwargs: Any) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = client.request(method, path, **kwargs)
    return response, time.monotonic() - started


@contextlib.contextmanager
def _fault(proc: subprocess.Popen[bytes], kind: str) -> Iterator[None]:
    """Make a running dynalite unreachable: paused (its port still accepts, nothing answers)
    or gone (the port refuses)."""
    if kind == "silent":
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(proc.pid, signal.SIGCONT)
    else:
        proc.kill()
        proc.wait(timeout=5)
        yield


@pytest.mark.parametrize("kind", ["silent", "closed"])
def test_server_answers_503_within_the_store_deadline(kind: str, tmp_path: Path) -> None:
    """``triggergate serve`` whose DynamoDB (dynalite) becomes unreachable after start: a
    JSON press (the deny fast path), a form press from the page (the full route), GET /quota
    and GET /runs/{id} answer 503 within store_timeout + 0.2 s; /healthz answers 200 without
    waiting for the store."""
    with fake_aws_env(), dynalite_process() as (url, proc):
        create_table(boto3.client("dynamodb", region_name=REGION, endpoint_url=url), "gate")
        env = {
            **FAKE_ENV,
            "TRIGGERGATE_STORE": f"dynamodb://gate?region={REGION}&endpoint_url={url}",
            "TRIGGERGATE_PIPELINE": "noop://",
            "TRIGGERGATE_STATE_DIR": str(tmp_path / "state"),
        }
        server = start_app(tmp_path, env)
        try:
            with httpx.Client(base_url=server.url, timeout=10) as client:
                assert client.post("/trigger", json={}).status_code == 202  # connections are open
                with _fault(proc, kind):
                    answers = {
                        "json press": _timed(client, "POST", "/trigger", json={}),
                        "form press": _timed(
                            client,
                            "POST",
                            "/trigger",
                            content=b"",
                            headers={
                                "content-type": "application/x-www-form-urlencoded",
                                "accept": "text/html",
                            },
                        ),
                        "quota": _timed(client, "GET", "/quota"),
                        "run": _timed(client, "GET", "/runs/abc123"),
                    }
                    health, health_time = _timed(client, "GET", "/healthz")
        finally:
            server.stop()
    for name, (response, took) in answers.items():
        assert response.status_code == 503, name
        assert took <= BOUND, f"{name}: 503 after {took:.2f}s"
    assert json.loads(answers["quota"][0].text)["error"] == "unavailable"
    assert health.status_code == 200
    assert health_time < STORE_TIMEOUT / 2, f"/healthz took {health_time:.2f}s"

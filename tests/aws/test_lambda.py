"""The Lambda entry points end to end on moto: API Gateway v1/v2 events, outcomes, failures.

The app is the real one (``create_app``) with the DynamoDB store, the CodePipeline
backend, SNS alerts and the SQS dead-letter queue, all on the moto server.
"""

from __future__ import annotations

import copy
import json
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.servers.aws import REGION, create_pipeline
from triggergate.aws.lambda_handler import LambdaApp
from triggergate.aws.outcomes import RunNotLinkedYet
from triggergate.clock import ManualClock
from triggergate.settings import Settings
from triggergate.web.app import create_app
from triggergate.wiring import build_service

pytestmark = pytest.mark.dynamodb

EVENTS = Path(__file__).parent / "events"
ACCOUNT = "123456789012"


def _event(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return loaded


def v1(
    method: str, path: str, *, body: str | None = None, source_ip: str = "198.51.100.10"
) -> dict[str, Any]:
    """A REST API proxy event (the stored AWS sample, re-aimed)."""
    event = copy.deepcopy(_event("apigw_v1_trigger.json"))
    event.update(httpMethod=method, path=path, resource=path, body=body)
    event["requestContext"].update(httpMethod=method, resourcePath=path, path=f"/api{path}")
    event["requestContext"]["identity"]["sourceIp"] = source_ip
    if body is None:
        event["headers"].pop("Content-Type")
        event["multiValueHeaders"].pop("Content-Type")
    return event


def v2(
    method: str, path: str, *, body: str | None = None, source_ip: str = "198.51.100.20"
) -> dict[str, Any]:
    """An HTTP API (payload 2.0) event."""
    event = copy.deepcopy(_event("apigw_v2_trigger.json"))
    event.update(routeKey=f"{method} {path}", rawPath=path, body=body)
    event["requestContext"]["http"].update(method=method, path=path, sourceIp=source_ip)
    if body is None:
        event["headers"].pop("content-type")
        event["headers"].pop("content-length")
    return event


@dataclass
class Aws:
    """The moto resources one test uses."""

    endpoint: str
    topic: str
    inbox: str  # a queue subscribed to the topic
    dlq: str
    pipelines: Any

    def messages(self, queue_url: str) -> list[dict[str, Any]]:
        sqs = boto3.client("sqs", region_name=REGION, endpoint_url=self.endpoint)
        found: list[dict[str, Any]] = []
        for _ in range(5):  # bounded: moto delivers synchronously, this only drains pages
            page = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
            if not page.get("Messages"):
                break
            found += page["Messages"]
        return found

    def alerts(self) -> list[dict[str, Any]]:
        """SNS envelopes received by the subscribed queue."""
        return [json.loads(m["Body"]) for m in self.messages(self.inbox)]


@pytest.fixture
def aws(moto: str) -> Aws:
    sns = boto3.client("sns", region_name=REGION, endpoint_url=moto)
    sqs = boto3.client("sqs", region_name=REGION, endpoint_url=moto)
    topic = sns.create_topic(Name="alerts")["TopicArn"]
    inbox = sqs.create_queue(QueueName="inbox")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=inbox, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
    dlq = sqs.create_queue(QueueName="dlq")["QueueUrl"]
    return Aws(moto, topic, inbox, dlq, create_pipeline(moto))


@pytest.fixture
def gateway(aws: Aws, tmp_path: Path) -> Iterator[Callable[..., tuple[LambdaApp, ManualClock]]]:
    """Build the Lambda app from settings like the template's, on moto, with a manual clock."""
    built: list[LambdaApp] = []

    def make(
        pipeline: str = "deploy", sns_endpoint: str | None = None, attempts: int = 5
    ) -> tuple[LambdaApp, ManualClock]:
        local = f"region={REGION}&endpoint_url={aws.endpoint}"
        settings = Settings(
            store=f"dynamodb://gate?{local}&create_table=true",
            pipeline=f"codepipeline://{pipeline}?{local}&request_variable=TRIGGERGATE_REQUEST_ID",
            notify=["log://", f"sns://{aws.topic}?endpoint_url={sns_endpoint or aws.endpoint}"],
            dead_letter=f"sqs://sqs.{REGION}.amazonaws.com/{ACCOUNT}/dlq?endpoint_url={aws.endpoint}",
            limits=["3/7d"],
            state_dir=tmp_path,
            outbox_attempts=attempts,
        )
        clock = ManualClock(datetime.now(UTC).timestamp())
        app = LambdaApp(create_app(settings, service=build_service(settings, clock)))
        built.append(app)
        return app, clock

    yield make
    for app in built:
        app.close()


def _json(response: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(response["body"])
    return body


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_rest_trigger_starts_one_execution_and_reports_it(gateway: Any, aws: Aws, moto: str) -> None:
    """v1 POST /trigger: 202, one execution carrying the request id, a TTL'd quota item, GET /runs."""
    app, _ = gateway()
    response = app.http(v1("POST", "/trigger", body="{}"), None)
    assert response["statusCode"] == 202
    run_id = _json(response)["run_id"]
    [summary] = aws.pipelines.list_pipeline_executions(pipelineName="deploy")["pipelineExecutionSummaries"]
    execution = aws.pipelines.get_pipeline_execution(
        pipelineName="deploy", pipelineExecutionId=summary["pipelineExecutionId"]
    )["pipelineExecution"]
    assert {"name": "TRIGGERGATE_REQUEST_ID", "resolvedValue": run_id} in execution["variables"]
    table = boto3.client("dynamodb", region_name=REGION, endpoint_url=moto).scan(TableName="gate")["Items"]
    [quota] = [i for i in table if i["pk"]["S"].startswith("q#")]
    assert "198.51.100.10" in quota["pk"]["S"]
    assert int(quota["ttl"]["N"]) > datetime.now(UTC).timestamp() + 6 * 86400
    status = app.http(v1("GET", f"/runs/{run_id}"), None)
    assert status["statusCode"] == 200
    assert _json(status)["status"] == "succeeded"  # moto finishes executions at once


def test_http_api_v2_event_is_served_the_same(gateway: Any, aws: Aws) -> None:
    """v2 POST /trigger: 202 and one execution; the client is the v2 sourceIp."""
    app, _ = gateway()
    response = app.http(v2("POST", "/trigger", body="{}"), None)
    assert response["statusCode"] == 202
    executions = aws.pipelines.list_pipeline_executions(pipelineName="deploy")
    assert len(executions["pipelineExecutionSummaries"]) == 1
    quota = _json(app.http(v2("GET", "/quota"), None))
    assert "198.51.100.20" in quota["client"]
    assert quota["remaining"] == 2


def test_spoofed_forwarded_for_changes_nothing(gateway: Any, aws: Aws) -> None:
    """A client-sent X-Forwarded-For is ignored: the quota follows sourceIp, the 4th press is 429."""
    app, _ = gateway()
    spoofed = _event("apigw_v1_spoofed_xff.json")
    codes = []
    for i in range(4):
        event = copy.deepcopy(spoofed)
        event["headers"]["X-Forwarded-For"] = f"203.0.113.{i}, 198.51.100.10"
        codes.append(app.http(event, None)["statusCode"])
    assert codes == [202, 202, 202, 429]
    assert (
        len(aws.pipelines.list_pipeline_executions(pipelineName="deploy")["pipelineExecutionSummaries"]) == 3
    )
    quota = _json(app.http(v1("GET", "/quota", source_ip="203.0.113.0"), None))
    assert quota["remaining"] == 3


def test_accepted_trigger_alert_arrives_through_sns(gateway: Any, aws: Aws) -> None:
    """The alert is published before the handler returns, with the reference's subject."""
    app, _ = gateway()
    run_id = _json(app.http(v1("POST", "/trigger", body="{}"), None))["run_id"]
    [alert] = aws.alerts()
    assert alert["Subject"] == "Pipeline triggered via public endpoint"
    assert run_id in alert["Message"]
    assert alert["MessageAttributes"]["event"]["Value"] == "accepted"


def test_missing_pipeline_is_502_refunded_alerted_and_says_nothing_internal(gateway: Any, aws: Aws) -> None:
    """No pipeline: 502 with a safe body, the slot comes back, and operators get a failure alert."""
    app, _ = gateway(pipeline="absent")
    response = app.http(v1("POST", "/trigger", body="{}"), None)
    assert response["statusCode"] == 502
    body = _json(response)
    assert set(body) == {"error", "detail", "request_id"}
    for secret in ("arn:", ACCOUNT, "PipelineNotFound", "absent", "codepipeline", "Traceback"):
        assert secret not in response["body"]
    assert _json(app.http(v1("GET", "/quota"), None))["remaining"] == 3
    subjects = [a["Subject"] for a in aws.alerts()]
    assert subjects == ["Pipeline trigger failed"]


def test_sns_down_still_202_then_retried_and_dead_lettered(gateway: Any, aws: Aws) -> None:
    """SNS unreachable: the trigger is accepted, the alert retried on schedule, then sent to SQS."""
    app, clock = gateway(sns_endpoint=f"http://127.0.0.1:{_closed_port()}", attempts=2)
    assert app.http(v1("POST", "/trigger", body="{}"), None)["statusCode"] == 202
    assert aws.messages(aws.dlq) == []
    clock.advance(600)
    app.events(_event("scheduled.json"), None)
    [letter] = aws.messages(aws.dlq)
    doc = json.loads(letter["Body"])
    assert doc["event"] == "dead_letter"
    assert doc["attributes"]["original_event"] == "accepted"


def test_pipeline_failure_event_is_recorded_audited_and_alerted_once(gateway: Any, aws: Aws) -> None:
    """A later FAILED state: GET /runs says failed, the audit log has it, one alert; repeats are no-ops."""
    app, clock = gateway()
    run_id = _json(app.http(v1("POST", "/trigger", body="{}"), None))["run_id"]
    aws.alerts()  # drop the "accepted" alert
    [summary] = aws.pipelines.list_pipeline_executions(pipelineName="deploy")["pipelineExecutionSummaries"]
    event = _event("codepipeline_state_change.json")
    event["detail"]["execution-id"] = summary["pipelineExecutionId"]
    event["time"] = datetime.fromtimestamp(clock(), UTC).isoformat().replace("+00:00", "Z")
    assert app.events(event, None) == {"recorded": True}
    assert app.events(event, None) == {"recorded": False}
    assert _json(app.http(v1("GET", f"/runs/{run_id}"), None))["status"] == "failed"
    audit = app.run(app.service.store.query("audit", since=0, until=clock() + 1, limit=10))
    assert {"accepted", "run_failed"} <= {a["event"] for a in audit if a.get("run_id") == run_id}
    assert [a["Subject"] for a in aws.alerts()] == ["Pipeline run failed"]


def test_event_for_an_unknown_execution_is_retried_only_while_fresh(gateway: Any) -> None:
    """A fresh unknown execution may still be linking (EventBridge retries); an old one is ignored."""
    app, clock = gateway()
    event = _event("codepipeline_state_change.json")
    event["time"] = datetime.fromtimestamp(clock(), UTC).isoformat().replace("+00:00", "Z")
    with pytest.raises(RunNotLinkedYet):
        app.events(event, None)
    clock.advance(3600)
    assert app.events(event, None) == {"recorded": False}

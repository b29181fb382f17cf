"""The Lambda entry points end to end on moto: API Gateway v1/v2 events, outcomes, failures.

The app is the real one (``create_app``) with the DynamoDB store, the CodePipeline
backend, SNS alerts and the SQS dead-letter queue, all on the moto server.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.aws.samples import http_event, pipeline_state_event, scheduled_event, stream_event
from tests.servers.aws import REGION, create_pipeline
from triggergate.aws.lambda_app import LambdaApp
from triggergate.aws.outcomes import RunNotLinkedYet
from triggergate.clock import ManualClock
from triggergate.settings import Settings
from triggergate.web.app import create_app
from triggergate.wiring import build_service

pytestmark = pytest.mark.dynamodb

ACCOUNT = "123456789012"


def v1(method: str, path: str, *, body: str = "", source_ip: str = "198.51.100.10") -> dict[str, Any]:
    """A REST API proxy event: `sam local generate-event apigateway aws-proxy`, re-aimed."""
    return http_event("sam-rest", method, path, source_ip=source_ip, body=body)


def v2(method: str, path: str, *, body: str = "", source_ip: str = "198.51.100.20") -> dict[str, Any]:
    """An HTTP API (payload 2.0) event: `sam local generate-event apigateway http-api-proxy`."""
    return http_event("sam-http", method, path, source_ip=source_ip, body=body)


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
        app.prepare()
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
    codes = []
    for i in range(4):
        event = v1("POST", "/trigger", body="{}")
        event["headers"]["X-Forwarded-For"] = f"203.0.113.{i}, 198.51.100.10"
        event["multiValueHeaders"]["X-Forwarded-For"] = [f"203.0.113.{i}, 198.51.100.10"]
        codes.append(app.http(event, None)["statusCode"])
    assert codes == [202, 202, 202, 429]
    assert (
        len(aws.pipelines.list_pipeline_executions(pipelineName="deploy")["pipelineExecutionSummaries"]) == 3
    )
    quota = _json(app.http(v1("GET", "/quota", source_ip="203.0.113.0"), None))
    assert quota["remaining"] == 3


def _outbox_keys(endpoint: str) -> list[str]:
    """The outbox items in the table (a scan is fine in a test), as a stream would name them."""
    items = boto3.client("dynamodb", region_name=REGION, endpoint_url=endpoint).scan(TableName="gate")[
        "Items"
    ]
    return [i["pk"]["S"] for i in items if i["pk"]["S"].startswith("o#") and i["gpk"]["S"] == "outbox"]


TABLE_ARN = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/gate"


def test_accepted_trigger_alert_leaves_through_the_outbox_stream(gateway: Any, aws: Aws) -> None:
    """The API function answers without publishing; the stream batch announcing the new
    outbox item makes the events function publish it, with the reference's subject."""
    app, _ = gateway()
    run_id = _json(app.http(v1("POST", "/trigger", body="{}"), None))["run_id"]
    assert aws.alerts() == []  # nothing was sent while the client waited
    keys = _outbox_keys(aws.endpoint)
    assert len(keys) == 2  # one per notifier: log:// and sns://
    assert app.events(stream_event(TABLE_ARN, keys), None) == {"delivered": 2}
    [alert] = aws.alerts()
    assert alert["Subject"] == "Pipeline triggered via public endpoint"
    assert run_id in alert["Message"]
    assert alert["MessageAttributes"]["event"]["Value"] == "accepted"
    assert _outbox_keys(aws.endpoint) == []
    assert app.events(stream_event(TABLE_ARN, keys), None) == {"delivered": 0}  # at-least-once: no resend


def test_stream_records_other_than_new_outbox_items_deliver_nothing_twice(gateway: Any, aws: Aws) -> None:
    """MODIFY records and other items' keys claim nothing; a claimed item is not claimed again."""
    app, clock = gateway()
    app.http(v1("POST", "/trigger", body="{}"), None)
    keys = _outbox_keys(aws.endpoint)
    assert app.events(stream_event(TABLE_ARN, keys, event_name="MODIFY"), None) == {"delivered": 0}
    assert app.events(stream_event(TABLE_ARN, ["q#c:198.51.100.10"]), None) == {"delivered": 0}
    assert aws.alerts() == []
    clock.advance(1)
    assert app.events(stream_event(TABLE_ARN, keys), None) == {"delivered": 2}


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
    app.events(stream_event(TABLE_ARN, _outbox_keys(aws.endpoint)), None)
    subjects = [a["Subject"] for a in aws.alerts()]
    assert subjects == ["Pipeline trigger failed"]


def test_sns_down_still_202_then_retried_and_dead_lettered(gateway: Any, aws: Aws) -> None:
    """SNS unreachable: the trigger is accepted, the alert retried on schedule, then sent to SQS."""
    app, clock = gateway(sns_endpoint=f"http://127.0.0.1:{_closed_port()}", attempts=2)
    assert app.http(v1("POST", "/trigger", body="{}"), None)["statusCode"] == 202
    assert app.events(stream_event(TABLE_ARN, _outbox_keys(aws.endpoint)), None) == {"delivered": 1}  # log
    assert aws.messages(aws.dlq) == []
    clock.advance(600)
    app.events(scheduled_event(), None)
    [letter] = aws.messages(aws.dlq)
    doc = json.loads(letter["Body"])
    assert doc["event"] == "dead_letter"
    assert doc["attributes"]["original_event"] == "accepted"


def _now_iso(clock: ManualClock) -> str:
    return datetime.fromtimestamp(clock(), UTC).isoformat().replace("+00:00", "Z")


def test_pipeline_failure_event_is_recorded_audited_and_alerted_once(gateway: Any, aws: Aws) -> None:
    """A later FAILED state: GET /runs says failed, the audit log has it, one alert; repeats are no-ops."""
    app, clock = gateway()
    run_id = _json(app.http(v1("POST", "/trigger", body="{}"), None))["run_id"]
    app.events(stream_event(TABLE_ARN, _outbox_keys(aws.endpoint)), None)
    aws.alerts()  # drop the "accepted" alert
    [summary] = aws.pipelines.list_pipeline_executions(pipelineName="deploy")["pipelineExecutionSummaries"]
    event = pipeline_state_event("deploy", summary["pipelineExecutionId"], "FAILED", _now_iso(clock))
    assert app.events(event, None) == {"recorded": True}
    assert app.events(event, None) == {"recorded": False}
    assert _json(app.http(v1("GET", f"/runs/{run_id}"), None))["status"] == "failed"
    audit = app.run(app.service.store.query("audit", since=0, until=clock() + 1, limit=10))
    assert {"accepted", "run_failed"} <= {a["event"] for a in audit if a.get("run_id") == run_id}
    assert app.events(stream_event(TABLE_ARN, _outbox_keys(aws.endpoint)), None) == {"delivered": 2}
    assert [a["Subject"] for a in aws.alerts()] == ["Pipeline run failed"]


def test_event_for_an_unknown_execution_is_retried_only_while_fresh(gateway: Any) -> None:
    """A fresh unknown execution may still be linking (EventBridge retries); an old one is ignored."""
    app, clock = gateway()
    event = pipeline_state_event("deploy", "01234567-0123-0123-0123-012345678901", "FAILED", _now_iso(clock))
    with pytest.raises(RunNotLinkedYet):
        app.events(event, None)
    clock.advance(3600)
    assert app.events(event, None) == {"recorded": False}


@pytest.mark.parametrize("sample", ["sam-rest", "sam-http", "powertools-rest", "powertools-http"])
def test_body_marked_base64_that_is_not_is_a_safe_400(gateway: Any, aws: Aws, sample: str) -> None:
    """isBase64Encoded with a body outside the base64 alphabet: 400 with the safe error body in
    the event's own response format, nothing started, nothing counted."""
    app, _ = gateway()
    event = http_event(sample, "POST", "/trigger", source_ip="198.51.100.30", body="{}")
    event.update(body='{"ref": "main"}', isBase64Encoded=True)
    response = app.http(event, None)
    assert response["statusCode"] == 400
    body = _json(response)
    assert set(body) == {"error", "detail", "request_id"}
    headers = {k.lower(): v for k, v in response["headers"].items()}
    assert headers["content-type"] == "application/json"
    assert headers["x-request-id"] == body["request_id"]
    assert "ratelimit-policy" in headers
    assert "binascii" not in response["body"] and "Traceback" not in response["body"]
    assert aws.pipelines.list_pipeline_executions(pipelineName="deploy")["pipelineExecutionSummaries"] == []
    assert (
        _json(app.http(http_event(sample, "GET", "/quota", source_ip="198.51.100.30"), None))["remaining"]
        == 3
    )


def test_valid_base64_body_is_decoded_as_api_gateway_sent_it(gateway: Any) -> None:
    """SAM's samples carry base64 bodies: a JSON body sent that way is read as JSON (400 for an
    unknown parameter proves it was parsed, not dropped)."""
    app, _ = gateway()
    response = app.http(v2("POST", "/trigger", body='{"params": {"nope": "x"}}'), None)
    assert response["statusCode"] == 400
    assert _json(response)["error"] != "bad_body"


def test_denials_are_summarised_once_a_minute_by_the_next_denial(gateway: Any) -> None:
    """Lambda runs nothing between invocations: the first denial of a new minute writes the
    previous minute's summary (one audit record), and denials within a minute write none."""
    app, clock = gateway()
    for _ in range(3):
        assert app.http(v2("POST", "/trigger", body="{}"), None)["statusCode"] == 202
    for _ in range(5):
        assert app.http(v2("POST", "/trigger"), None)["statusCode"] == 429

    def summaries() -> list[dict[str, Any]]:
        audit = app.run(app.service.store.query("audit", since=0, until=clock() + 1, limit=50))
        return [a for a in audit if a["event"] == "denied"]

    assert summaries() == []
    clock.advance(61)
    assert app.http(v2("POST", "/trigger"), None)["statusCode"] == 429
    [summary] = summaries()
    assert summary["total"] == 5

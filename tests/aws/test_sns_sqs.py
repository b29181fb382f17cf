"""SNS alerts read back through an SQS subscription, and the SQS dead-letter queue, on moto."""

from __future__ import annotations

import json
import socket
from typing import Any

import boto3
import pytest

from tests.servers.aws import REGION
from triggergate.clock import ManualClock
from triggergate.errors import ConfigurationError, NotifyError
from triggergate.notifiers.base import Alert
from triggergate.notifiers.sns import SNSNotifier, message_attributes, sns_subject
from triggergate.notifiers.sqs import SQSNotifier
from triggergate.outbox import Outbox
from triggergate.registry import Context, notifier_from_url, store_from_url
from triggergate.stores.base import Batch

pytestmark = pytest.mark.dynamodb

ACCEPTED = Alert(
    event="accepted",
    subject="Pipeline triggered via public endpoint",
    body="Pipeline: deploy\nClient: 203.0.113.7\nExecution: exec-1",
    attributes={"pipeline": "deploy", "client": "203.0.113.7", "empty": ""},
)


def _queue(endpoint: str, name: str) -> tuple[Any, str, str]:
    """A queue: (client, url, arn)."""
    sqs = boto3.client("sqs", region_name=REGION, endpoint_url=endpoint)
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return sqs, url, arn


def _receive(sqs: Any, url: str, count: int) -> list[dict[str, Any]]:
    """Up to ``count`` messages, waiting briefly; bounded."""
    found: list[dict[str, Any]] = []
    for _ in range(10):
        answer = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0, MessageAttributeNames=["All"]
        )
        found += answer.get("Messages", [])
        if len(found) >= count:
            break
    return found


def _sns_to_sqs(endpoint: str) -> tuple[str, Any, str]:
    """A topic subscribed by a queue: (topic ARN, sqs client, queue URL)."""
    sns = boto3.client("sns", region_name=REGION, endpoint_url=endpoint)
    topic = sns.create_topic(Name="alerts")["TopicArn"]
    sqs, url, arn = _queue(endpoint, "alert-inbox")
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
    return topic, sqs, url


async def test_sns_message_arrives_with_subject_body_and_attributes(moto: str) -> None:
    """An accepted-trigger alert reaches an SQS subscriber: subject, body, filter attributes."""
    topic, sqs, url = _sns_to_sqs(moto)
    notifier = notifier_from_url(f"sns://{topic}?endpoint_url={moto}", Context(environ={}))
    await notifier.send(ACCEPTED)
    [message] = _receive(sqs, url, 1)
    envelope = json.loads(message["Body"])
    assert envelope["Subject"] == "Pipeline triggered via public endpoint"
    assert envelope["Message"] == ACCEPTED.body
    assert envelope["MessageAttributes"] == {
        "event": {"Type": "String", "Value": "accepted"},
        "pipeline": {"Type": "String", "Value": "deploy"},
        "client": {"Type": "String", "Value": "203.0.113.7"},
    }


def test_subject_is_one_printable_line_under_one_hundred_characters() -> None:
    """Newlines go, non-ASCII becomes '?', and long subjects are cut to 99 characters."""
    assert sns_subject("Run failed\nin stage\tBuild") == "Run failed in stage Build"
    assert sns_subject("Déploiement") == "D?ploiement"
    long = sns_subject("x" * 300)
    assert len(long) == 99
    assert long.endswith("...")
    assert sns_subject("\n") == "triggergate alert"


def test_message_attributes_are_capped_at_ten_and_sanitised() -> None:
    """At most ten String attributes, names limited to SNS's alphabet, reserved prefixes dropped."""
    alert = Alert("x", "s", "b", {f"k {i}": "v" for i in range(20)} | {"AWS.x": "v"})
    found = message_attributes(alert)
    assert len(found) == 10
    assert "k_0" in found
    assert all(v["DataType"] == "String" for v in found.values())
    assert not any(k.lower().startswith("aws.") for k in found)


async def test_sns_down_raises_notify_error_without_the_endpoint(moto_endpoint: str) -> None:
    """Nothing listening: NotifyError naming the failure class, not the host or topic."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    arn = "arn:aws:sns:us-east-1:123456789012:alerts"
    notifier = SNSNotifier.from_url(f"sns://{arn}?endpoint_url=http://127.0.0.1:{port}", Context())
    with pytest.raises(NotifyError) as caught:
        await notifier.send(ACCEPTED)
    assert "127.0.0.1" not in str(caught.value)
    assert "123456789012" not in str(caught.value)


async def test_sqs_dead_letter_receives_the_alert_as_json(moto: str) -> None:
    """SendMessage carries the alert document and its event attribute."""
    sqs, url, _ = _queue(moto, "triggergate-dlq")
    location = url.split("://", 1)[1].split("/", 1)[1]  # ACCOUNT/QUEUE
    notifier = notifier_from_url(
        f"sqs://sqs.{REGION}.amazonaws.com/{location}?endpoint_url={moto}",
        Context(environ={}),
        key="dead_letter",
    )
    await notifier.send(ACCEPTED)
    [message] = _receive(sqs, url, 1)
    assert json.loads(message["Body"]) == ACCEPTED.to_doc()
    assert message["MessageAttributes"]["event"]["StringValue"] == "accepted"


async def test_alert_retried_then_dead_lettered_when_sns_stays_down(moto: str) -> None:
    """SNS unreachable: the outbox on DynamoDB retries, buries, and SQS gets the dead letter."""
    sqs, url, _ = _queue(moto, "triggergate-dlq")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    clock = ManualClock()
    store = store_from_url(
        f"dynamodb://gate?region={REGION}&endpoint_url={moto}&create_table=true",
        Context(clock=clock),
    )
    await store.open()
    down = SNSNotifier.from_url(
        f"sns://arn:aws:sns:us-east-1:123456789012:alerts?endpoint_url=http://127.0.0.1:{port}",
        Context(),
    )
    dlq = SQSNotifier.from_url(
        f"sqs://sqs.{REGION}.amazonaws.com/{url.split('/', 3)[3]}?endpoint_url={moto}", Context()
    )
    outbox = Outbox(store, [down], clock=clock, max_attempts=3, base_delay=1, dead_letter=dlq)
    await store.apply(Batch(outbox=outbox.items_for(ACCEPTED)))
    for _ in range(3):
        assert await outbox.deliver_due() == 0
        clock.advance(10)
    assert len(await store.dead(10)) == 1
    [message] = _receive(sqs, url, 1)
    letter = json.loads(message["Body"])
    assert letter["event"] == "dead_letter"
    assert letter["attributes"]["original_event"] == "accepted"
    await store.close()


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("sns://alerts", "notify"),
        ("sns://arn:aws:sns:us-east-1:123:alerts", "notify"),
        ("sns://arn:aws:sns:us-east-1:123456789012:alerts?colour=red", "notify"),
        ("sqs://alerts", "dead_letter"),
        ("sqs://sqs.us-east-1.amazonaws.com/123456789012/", "dead_letter"),
    ],
)
def test_invalid_urls_are_configuration_errors(url: str, key: str) -> None:
    """Malformed SNS and SQS URLs are refused at configuration time, naming the setting."""
    with pytest.raises(ConfigurationError) as caught:
        notifier_from_url(url, Context(environ={}), key=key)
    assert caught.value.key == key

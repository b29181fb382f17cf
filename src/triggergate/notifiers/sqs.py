"""``sqs://sqs.REGION.amazonaws.com/ACCOUNT/QUEUE?endpoint_url=U``: the dead-letter queue.

The location is the queue URL without its scheme (what CloudFormation's
``!Ref`` of a queue gives, minus ``https://``), so no ``GetQueueUrl`` call or
permission is needed; the region comes from the host (or ``?region=``).
Each alert is one SendMessage whose body is the alert as JSON, with
``event`` as a String message attribute.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import threading
from typing import TYPE_CHECKING

from triggergate.aws.clients import AwsUrl, error_code, make_client, parse_url
from triggergate.errors import ConfigurationError, NotifyError
from triggergate.notifiers.base import Alert, Notifier
from triggergate.registry import Context

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

_QUEUE = re.compile(
    r"^(?:sqs\.([a-z0-9-]+)\.amazonaws\.com|[A-Za-z0-9.:-]+)/(\d{12})/([A-Za-z0-9_-]{1,80}(?:\.fifo)?)$"
)


class SQSNotifier(Notifier):
    """Sends alerts, as JSON messages, to one SQS queue."""

    def __init__(self, where: AwsUrl, queue_url: str, timeout: float = 5.0) -> None:
        self.where, self.queue_url, self.timeout = where, queue_url, timeout
        # The ARN/queue URL holds the account id: the target (logged, stored) keeps only
        # the last name and a fingerprint, as the webhook notifier does.
        digest = hashlib.sha256(where.location.encode()).hexdigest()[:12]
        self.target = f"sqs://{re.split(r'[:/]', where.location)[-1]}#{digest}"
        self._client: SQSClient | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, ctx: Context) -> SQSNotifier:
        location = url.split("://", 1)[-1].split("?", 1)[0].rstrip("/")
        match = _QUEUE.match(location)
        if not match:
            raise ConfigurationError(
                "dead_letter: write sqs://sqs.REGION.amazonaws.com/ACCOUNT/QUEUE",
                key="dead_letter",
                value=url,
            )
        environ = {"AWS_REGION": match[1]} if match[1] else ctx.environ
        where = parse_url(url, Context(environ=environ), "dead_letter")
        # With a local endpoint the queue lives there; moto and AWS both accept the full URL.
        base = where.endpoint_url.rstrip("/") if where.endpoint_url else f"https://{location.split('/')[0]}"
        queue_url = f"{base}/{match[2]}/{match[3]}"
        return cls(AwsUrl(location, where.region, where.endpoint_url, where.query), queue_url)

    @property
    def client(self) -> SQSClient:
        with self._lock:
            if self._client is None:
                self._client = make_client("sqs", self.where, timeout=self.timeout, attempts=2)
            return self._client

    def prepare(self) -> None:
        _ = self.client  # built before serving, never inside a request

    async def send(self, alert: Alert) -> None:
        try:
            await asyncio.to_thread(
                self.client.send_message,
                QueueUrl=self.queue_url,
                MessageBody=json.dumps(alert.to_doc(), ensure_ascii=False),
                MessageAttributes={"event": {"DataType": "String", "StringValue": alert.event}},
            )
        except Exception as exc:
            raise NotifyError(f"sqs: send failed ({error_code(exc)})") from exc

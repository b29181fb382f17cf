"""``sns://TOPIC_ARN?region=R&endpoint_url=U``: one SNS Publish per alert.

The subject is the alert's (the service sets "Pipeline triggered via public
endpoint" for accepted triggers and its own subjects for failures), made to
fit SNS's rule: printable ASCII, one line, under 100 characters. The alert's
attributes, plus ``event``, become String message attributes so subscribers
can filter (SNS takes at most 10). The region defaults to the ARN's.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import threading
from typing import TYPE_CHECKING, Any

from triggergate.aws.clients import AwsUrl, error_code, make_client, parse_url
from triggergate.errors import ConfigurationError, NotifyError
from triggergate.notifiers.base import Alert, Notifier
from triggergate.registry import Context

if TYPE_CHECKING:
    from mypy_boto3_sns import SNSClient

_ARN = re.compile(r"^arn:aws[a-z-]*:sns:([a-z0-9-]+):\d{12}:[A-Za-z0-9_-]{1,256}(\.fifo)?$")
_ATTRIBUTE_NAME = re.compile(r"[^A-Za-z0-9_.-]")
MAX_ATTRIBUTES = 10
SUBJECT_LIMIT = 99  # "less than 100 characters"


def sns_subject(text: str) -> str:
    """One printable-ASCII line under 100 characters, never empty."""
    line = " ".join(text.split())
    line = "".join(c if " " <= c <= "~" else "?" for c in line)
    if len(line) > SUBJECT_LIMIT:
        line = line[: SUBJECT_LIMIT - 3].rstrip() + "..."
    return line or "triggergate alert"


def message_attributes(alert: Alert) -> dict[str, Any]:
    """``event`` first, then the alert's non-empty attributes, as String attributes (at most 10)."""
    pairs = [("event", alert.event), *alert.attributes.items()]
    found: dict[str, Any] = {}
    for name, value in pairs:
        # SNS refuses empty values and names outside [A-Za-z0-9_.-], or starting with "AWS.".
        key = _ATTRIBUTE_NAME.sub("_", name)[:256].lstrip(".")
        if value and key and key not in found and not key.lower().startswith(("aws.", "amazon.")):
            found[key] = {"DataType": "String", "StringValue": str(value)}
    return dict(list(found.items())[:MAX_ATTRIBUTES])


class SNSNotifier(Notifier):
    """Publishes alerts to one SNS topic."""

    def __init__(self, where: AwsUrl, timeout: float = 5.0) -> None:
        self.where, self.topic, self.timeout = where, where.location, timeout
        # The ARN/queue URL holds the account id: the target (logged, stored) keeps only
        # the last name and a fingerprint, as the webhook notifier does.
        digest = hashlib.sha256(where.location.encode()).hexdigest()[:12]
        self.target = f"sns://{re.split(r'[:/]', where.location)[-1]}#{digest}"
        self._client: SNSClient | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, ctx: Context) -> SNSNotifier:
        arn = url.split("://", 1)[-1].split("?", 1)[0]
        match = _ARN.match(arn)
        if not match:
            raise ConfigurationError(
                "notify: write sns://arn:aws:sns:REGION:ACCOUNT:TOPIC", key="notify", value=url
            )
        region_env = {"AWS_REGION": match[1]}
        where = parse_url(url, Context(environ=region_env), "notify")
        return cls(AwsUrl(arn, where.region, where.endpoint_url, where.query))

    @property
    def client(self) -> SNSClient:
        with self._lock:
            if self._client is None:
                self._client = make_client("sns", self.where, timeout=self.timeout, attempts=2)
            return self._client

    def prepare(self) -> None:
        _ = self.client  # built before serving, never inside a request

    async def send(self, alert: Alert) -> None:
        try:
            await asyncio.to_thread(
                self.client.publish,
                TopicArn=self.topic,
                Subject=sns_subject(alert.subject),
                Message=alert.body or alert.subject,
                MessageAttributes=message_attributes(alert),
            )
        except Exception as exc:
            raise NotifyError(f"sns: publish failed ({error_code(exc)})") from exc

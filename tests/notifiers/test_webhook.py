"""``webhook+http(s)://``: JSON POSTs to a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers.webhook import WebhookServer, webhook_server
from triggergate.clock import ManualClock
from triggergate.errors import ConfigurationError, NotifyError
from triggergate.notifiers.base import Alert
from triggergate.notifiers.webhook import WebhookNotifier, sign
from triggergate.registry import Context, notifier_from_url

SECRET = "whsec-test-0123456789"
ALERT = Alert(
    event="accepted",
    subject="Pipeline demo triggered",
    body="Run r-1 started for 203.0.113.7",
    attributes={"run_id": "r-1", "client": "203.0.113.7"},
)


@pytest.fixture
def receiver() -> Iterator[WebhookServer]:
    with webhook_server(secret=SECRET) as server:
        yield server


@pytest.fixture
def open_receiver() -> Iterator[WebhookServer]:
    with webhook_server() as server:
        yield server


def notifier(server: WebhookServer, path: str = "/hook", secret: str | None = SECRET) -> WebhookNotifier:
    environ = {"TRIGGERGATE_WEBHOOK_SECRET": secret} if secret else {}
    url = "webhook+" + server.url + path
    built = notifier_from_url(url, Context(clock=ManualClock(1_700_000_123.9), environ=environ))
    assert isinstance(built, WebhookNotifier)
    return built


async def test_alert_is_posted_as_slack_compatible_json(receiver: WebhookServer) -> None:
    """The body carries ``text`` = subject + newline + body, and the alert's fields."""
    hook = notifier(receiver, "/services/T0/B0/abc")
    await hook.send(ALERT)
    await hook.close()
    assert len(receiver.received) == 1
    got = receiver.received[0]
    assert got.path == "/services/T0/B0/abc"
    assert got.headers["content-type"] == "application/json"
    assert got.json() == {
        "text": "Pipeline demo triggered\nRun r-1 started for 203.0.113.7",
        "event": "accepted",
        "subject": ALERT.subject,
        "body": ALERT.body,
        "attributes": ALERT.attributes,
    }


async def test_signature_covers_timestamp_and_raw_body(receiver: WebhookServer) -> None:
    """The receiver's own HMAC over "<ts>.<raw body>" matches; the timestamp is the clock's."""
    hook = notifier(receiver)
    await hook.send(ALERT)
    await hook.close()
    got = receiver.received[0]
    assert got.signature_ok is True
    assert got.headers["x-triggergate-timestamp"] == "1700000123"
    expected = sign(SECRET, "1700000123", got.body)
    assert got.headers["x-triggergate-signature"] == expected
    assert expected.startswith("sha256=")
    assert len(expected) == len("sha256=") + 64


async def test_wrong_secret_is_rejected_by_the_receiver(receiver: WebhookServer) -> None:
    """Signed with another secret, the receiver answers 401 and send() raises NotifyError."""
    hook = notifier(receiver, secret="not-the-secret")
    with pytest.raises(NotifyError, match="HTTP 401"):
        await hook.send(ALERT)
    await hook.close()
    assert receiver.received == []
    assert len(receiver.rejected) == 1


async def test_without_a_secret_no_signature_is_sent(open_receiver: WebhookServer) -> None:
    """No TRIGGERGATE_WEBHOOK_SECRET: no signature or timestamp headers."""
    hook = notifier(open_receiver, secret=None)
    await hook.send(ALERT)
    await hook.close()
    headers = open_receiver.received[0].headers
    assert "x-triggergate-signature" not in headers
    assert "x-triggergate-timestamp" not in headers


async def test_non_2xx_answer_is_a_safe_notify_error(receiver: WebhookServer) -> None:
    """A 503 raises NotifyError naming the status, never the URL path (it may be a secret)."""
    receiver.fail_times, receiver.fail_status = 1, 503
    hook = notifier(receiver, "/services/T0/B0/token-in-path")
    with pytest.raises(NotifyError, match="HTTP 503") as caught:
        await hook.send(ALERT)
    await hook.close()
    assert "token-in-path" not in str(caught.value)
    assert SECRET not in str(caught.value)


async def test_unreachable_receiver_is_a_notify_error() -> None:
    """A refused connection raises NotifyError with the httpx error type only."""
    with webhook_server() as gone:
        url = "webhook+" + gone.url + "/hook"
    hook = notifier_from_url(url, Context())
    with pytest.raises(NotifyError, match="ConnectError"):
        await hook.send(ALERT)
    await hook.close()


async def test_slow_receiver_times_out() -> None:
    """A receiver slower than the timeout raises NotifyError (ReadTimeout)."""
    with webhook_server() as slow:
        slow.delay = 1.0
        hook = WebhookNotifier(slow.url + "/hook", timeout=0.2)
        with pytest.raises(NotifyError, match="ReadTimeout"):
            await hook.send(ALERT)
        await hook.close()


def test_target_keeps_host_and_fingerprint_but_not_the_path() -> None:
    """The outbox target hides the path; different URLs still get different targets."""
    a = notifier_from_url("webhook+https://hooks.example.com/services/T/B/secret1", Context())
    b = notifier_from_url("webhook+https://hooks.example.com/services/T/B/secret2", Context())
    assert a.target.startswith("webhook+https://hooks.example.com/#")
    assert "secret1" not in a.target
    assert a.target != b.target
    again = notifier_from_url("webhook+https://hooks.example.com/services/T/B/secret1", Context())
    assert again.target == a.target


@pytest.mark.parametrize(
    ("bad_url", "needle"),
    [
        ("webhook+http://hooks.example.com/x", "only for loopback"),
        ("webhook+https://user:pw@hooks.example.com/x", "credentials"),
        ("webhook+https:///x", "needs a host"),
    ],
)
def test_bad_webhook_urls_are_configuration_errors(bad_url: str, needle: str) -> None:
    """Plain HTTP off loopback, credentials in the URL and a missing host are refused."""
    with pytest.raises(ConfigurationError, match=needle) as caught:
        WebhookNotifier.from_url(bad_url, Context())
    assert "pw" not in str(caught.value.value)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "127.8.9.10"])
def test_plain_http_is_allowed_on_loopback(host: str) -> None:
    """``webhook+http://`` is accepted for loopback hosts (tests and local relays)."""
    assert WebhookNotifier.from_url(f"webhook+http://{host}:9/x", Context()).url.startswith("http://")

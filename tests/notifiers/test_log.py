"""``log://``: one JSON line per alert on ``triggergate.alerts``, and it never raises."""

from __future__ import annotations

import json
import logging

import pytest

from triggergate.errors import ConfigurationError
from triggergate.notifiers.base import Alert
from triggergate.notifiers.log import LogNotifier
from triggergate.registry import Context, notifier_from_url

ALERT = Alert(
    event="accepted",
    subject="Pipeline demo triggered by 203.0.113.7",
    body="run r-1 started\nsecond line",
    attributes={"run_id": "r-1", "client": "203.0.113.7"},
)


async def test_log_notifier_writes_one_json_line_per_alert(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each alert is exactly one record whose message is a one-line JSON object of the alert."""
    notifier = notifier_from_url("log://", Context())
    with caplog.at_level(logging.INFO, logger="triggergate.alerts"):
        await notifier.send(ALERT)
        await notifier.send(ALERT)
    records = [r for r in caplog.records if r.name == "triggergate.alerts"]
    assert len(records) == 2
    line = records[0].getMessage()
    assert "\n" not in line
    assert json.loads(line) == {"msg": "alert", **ALERT.to_doc()}


async def test_log_notifier_never_raises_when_logging_breaks() -> None:
    """A handler that raises inside emit does not make send() raise."""

    class Broken(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            raise RuntimeError("disk full")

    logger = logging.getLogger("triggergate.alerts")
    handler = Broken()
    logger.addHandler(handler)
    try:
        with pytest.raises(RuntimeError):  # the handler really raises through logging
            logger.error("probe")
        await LogNotifier().send(ALERT)
    finally:
        logger.removeHandler(handler)


def test_log_url_resolves_to_log_notifier_named_log() -> None:
    """``log://`` builds a LogNotifier whose outbox target is ``log://``."""
    notifier = notifier_from_url("log://", Context())
    assert isinstance(notifier, LogNotifier)
    assert notifier.target == "log://"


def test_log_url_with_a_host_is_a_configuration_error() -> None:
    """``log://somewhere`` is refused: the log notifier has no destination to name."""
    with pytest.raises(ConfigurationError, match="log://"):
        LogNotifier.from_url("log://somewhere/else", Context())

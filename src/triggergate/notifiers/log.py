"""``log://``: every alert as one JSON line on the ``triggergate.alerts`` logger.

The default notifier: it needs nothing, so an operator always has a trace of
each alert even when every other destination is down.
"""

from __future__ import annotations

import json
import logging
from urllib.parse import urlsplit

from triggergate.errors import ConfigurationError
from triggergate.notifiers.base import Alert, Notifier
from triggergate.registry import Context

logger = logging.getLogger("triggergate.alerts")


class LogNotifier(Notifier):
    """Writes each alert as one JSON object (``json.dumps`` escapes newlines) and never raises."""

    def __init__(self, level: int = logging.INFO) -> None:
        self.level = level
        self.target = "log://"

    @classmethod
    def from_url(cls, url: str, ctx: Context) -> LogNotifier:
        parts = urlsplit(url)
        if parts.scheme.lower() != "log" or parts.netloc or parts.path not in ("", "/"):
            raise ConfigurationError(
                "notify: log notifier takes no host or path; write log://", key="notify", value=url
            )
        return cls()

    async def send(self, alert: Alert) -> None:
        try:
            line = json.dumps({"msg": "alert", **alert.to_doc()}, ensure_ascii=False, default=str)
            logger.log(self.level, line, extra={"alert_event": alert.event})
        except Exception:
            # Reaching here means logging itself is broken; there is nowhere better to say so.
            return

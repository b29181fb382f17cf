"""The contract every notifier implements, and the alert it sends."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

from triggergate.registry import Context


@dataclass(frozen=True)
class Alert:
    """One message to operators.

    ``event`` is a machine name (``accepted``, ``failed``, ``refunded``,
    ``budget_exhausted``, ``run_failed``...); ``subject`` is one line;
    ``body`` is plain text; ``attributes`` are flat strings for filtering
    (SNS message attributes, webhook fields). Never holds a secret.
    """

    event: str
    subject: str
    body: str
    attributes: dict[str, str] = field(default_factory=dict)

    def to_doc(self) -> dict[str, Any]:
        # Not dataclasses.asdict: its deep copy was a tenth of an accepted trigger's CPU.
        return {
            "event": self.event,
            "subject": self.subject,
            "body": self.body,
            "attributes": dict(self.attributes),
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Alert:
        return cls(
            event=str(doc["event"]),
            subject=str(doc["subject"]),
            body=str(doc["body"]),
            attributes={str(k): str(v) for k, v in dict(doc.get("attributes", {})).items()},
        )


class Notifier(abc.ABC):
    """Delivers alerts to one destination."""

    #: The URL as configured, with any secret removed; the outbox target name.
    target: str = ""

    @classmethod
    @abc.abstractmethod
    def from_url(cls, url: str, ctx: Context) -> Notifier:
        """Build from the configured URL; raise ConfigurationError naming what is wrong."""

    @abc.abstractmethod
    async def send(self, alert: Alert) -> None:
        """Deliver one alert or raise :class:`~triggergate.errors.NotifyError`."""

    def prepare(self) -> None:  # noqa: B027 - adapters without an SDK client need nothing
        """Build SDK clients now (no network): called once before serving, so no request's
        deadline pays for an import or a client's construction."""

    async def close(self) -> None:  # noqa: B027 - most notifiers hold nothing
        """Release connections."""

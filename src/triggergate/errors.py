"""Every error type triggergate raises, each with the situation that raises it.

Adapters wrap foreign exceptions at their boundary (``raise StoreError(...) from exc``):
the cause stays attached for logs and never reaches a public response.
"""

from __future__ import annotations


class TriggergateError(Exception):
    """Raised when anything in triggergate fails; the base of every error below."""


class ConfigurationError(TriggergateError):
    """Raised when settings or an adapter URL are invalid; names key, value and what is allowed."""

    def __init__(self, message: str, *, key: str = "", value: object = None) -> None:
        super().__init__(message)
        self.key = key
        self.value = value


class RequestError(TriggergateError):
    """Raised when a client request is malformed; carries the public status and error code."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


class StoreError(TriggergateError):
    """Raised when the store cannot answer (down, stalled, read-only or timed out)."""


class BackendError(TriggergateError):
    """Raised when a pipeline backend fails; ``definite`` says no run can have started."""

    def __init__(self, message: str, *, definite: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.definite = definite
        self.retry_after = retry_after


class BackendRefused(BackendError):
    """Raised when the backend definitely refused the start (bad credentials, missing pipeline)."""

    def __init__(self, message: str, *, misconfigured: bool = False) -> None:
        super().__init__(message, definite=True)
        self.misconfigured = misconfigured


class BackendUncertain(BackendError):
    """Raised when the start outcome is unknown (timeout, dropped connection): reconcile it."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message, definite=False, retry_after=retry_after)


class BackendCannotFind(BackendUncertain):
    """Raised by ``find`` when the backend cannot look runs up at all (configured without
    a correlation), so an uncertain start stays uncertain: held, never refunded."""


class NotifyError(TriggergateError):
    """Raised when a notifier could not deliver an alert; the outbox retries it."""

"""The contract every pipeline backend implements."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from triggergate.registry import Context

RunState = Literal["queued", "running", "succeeded", "failed", "cancelled", "superseded", "unknown"]
FINAL_STATES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled", "superseded"})


@dataclass(frozen=True)
class StartRequest:
    """What a backend needs to start one run.

    ``request_id`` is unique per accepted trigger and is the idempotency token
    toward the backend: starting twice with the same id must start one run.
    ``params`` holds only allow-listed, validated parameters: the pipeline's inputs.
    ``ref`` (the allow-listed ``ref`` parameter, or None) selects what runs, as each
    backend documents (a branch, a tag, a source revision); it is never in ``params``.
    """

    request_id: str
    client: str
    params: Mapping[str, str] = field(default_factory=dict)
    ref: str | None = None


@dataclass(frozen=True)
class Started:
    """A run the backend accepted: its own reference, and a URL people can open."""

    ref: str
    url: str | None = None
    state: RunState = "queued"


@dataclass(frozen=True)
class Status:
    """A run's state in the common vocabulary, with the backend's URL for it."""

    state: RunState
    url: str | None = None
    detail: str = ""


class Backend(abc.ABC):
    """Starts pipeline runs and reports their state."""

    #: A short human name for the pipeline (page, alerts).
    name: str = "pipeline"

    @classmethod
    @abc.abstractmethod
    def from_url(cls, url: str, ctx: Context) -> Backend:
        """Build from the configured URL; raise ConfigurationError naming what is wrong."""

    @abc.abstractmethod
    async def start(self, request: StartRequest) -> Started:
        """Start one run, idempotently by ``request.request_id``.

        Raise :class:`~triggergate.errors.BackendRefused` (or any BackendError with
        ``definite=True``) when no run started for sure, and
        :class:`~triggergate.errors.BackendUncertain` when it may have. Once a request may
        have reached the CI system it is not sent again unless the system takes an
        idempotency key: an uncertain start is reconciled with :meth:`find`.
        """

    @abc.abstractmethod
    async def status(self, ref: str) -> Status:
        """The current state of a run this backend started."""

    async def find(self, request_id: str) -> Started | None:
        """Look up a run by the request id it was started with (reconciliation).

        Backends that cannot look runs up return None, which makes an
        uncertain start count as not started.
        """
        return None

    def notes(self) -> list[str]:
        """What the configured choices cost, for ``check-config`` to print (may be empty)."""
        return []

    async def ping(self) -> None:  # noqa: B027 - readiness is optional for a backend
        """Return when the backend is reachable; raise BackendError otherwise."""

    def prepare(self) -> None:  # noqa: B027 - adapters without an SDK client need nothing
        """Build SDK clients now (no network): called once before serving, so no request's
        deadline pays for an import or a client's construction."""

    async def close(self) -> None:  # noqa: B027 - most backends hold nothing
        """Release connections."""

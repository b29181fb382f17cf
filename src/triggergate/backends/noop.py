"""``noop://``: a backend that starts nothing, for dry runs and benchmarks.

URL: ``noop://`` or ``noop://?name=dry-run``. Every start "succeeds" at once and
keeps nothing, so the accept path can be measured without any pipeline cost.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from triggergate.backends.base import Backend, Started, StartRequest, Status
from triggergate.errors import ConfigurationError
from triggergate.registry import Context


class NoopBackend(Backend):
    """Accepts every start, runs nothing, and reports every run as succeeded."""

    def __init__(self, name: str = "noop") -> None:
        self.name = name

    @classmethod
    def from_url(cls, url: str, ctx: Context) -> NoopBackend:
        """Take only ``?name=``; anything else in the URL is a ConfigurationError."""
        parts = urlsplit(url)
        try:
            query = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
        except ValueError:
            query = [("", parts.query)]
        keys = [key for key, _ in query]
        if parts.netloc or parts.path or parts.fragment or any(key != "name" for key in keys):
            raise ConfigurationError(
                f"pipeline: unexpected parts in {url!r}; allowed: noop:// or noop://?name=NAME",
                key="pipeline",
                value=url,
            )
        if len(keys) > 1 or (query and not query[0][1]):
            raise ConfigurationError(
                f"pipeline: name in {url!r} must be given once and not empty",
                key="pipeline",
                value=url,
            )
        return cls(query[0][1] if query else "noop")

    async def start(self, request: StartRequest) -> Started:
        """Start nothing; the run is done the moment it is asked for."""
        return Started(ref=request.request_id, state="succeeded")

    async def status(self, ref: str) -> Status:
        """Every run of this backend has succeeded (it had nothing to do)."""
        return Status("succeeded")

    async def find(self, request_id: str) -> Started | None:
        """Report any request id as started.

        A noop start has no effect, so "started" and "not started" cannot be told
        apart; counting an uncertain start as started keeps its quota slot charged,
        the same conservative answer a real backend gives when its lookup finds the
        run, and it never refunds a trigger that was in fact accepted.
        """
        return Started(ref=request_id, state="succeeded")

"""GitHub Actions: ``github://OWNER/REPO/WORKFLOW_FILE?ref=main``.

Starts a run with the ``workflow_dispatch`` REST API and reads it back with
the workflow-run API. Token: ``TRIGGERGATE_GITHUB_TOKEN`` (fine-grained PAT
with Actions read/write, or a GitHub App installation token), sent only as a
header. URL options: ``ref`` (default ``main``), ``api`` (GitHub Enterprise,
tests), ``correlation_input`` (default ``triggergate_id``; empty disables it).

A request's ``ref`` is the dispatch's ``ref`` (the branch or tag the workflow runs
on), never an input; allow-listed parameters are the ``inputs``. GitHub takes at most
25 inputs (OpenAPI ``actions/create-workflow-dispatch``: ``maxProperties: 25``), the
correlation input included, so more allow-listed parameters are a configuration error.

The run is identified from the dispatch answer when GitHub returns run
details (``return_run_details``); older servers refuse that key and
are asked again without it. Otherwise the run is found by the correlation
input, so the workflow must declare it and name its runs after it::

    on:
      workflow_dispatch:
        inputs:
          triggergate_id: {required: false}
    run-name: ${{ inputs.triggergate_id }}

``find()`` pages through the workflow's ``workflow_dispatch`` runs created since the
start was sent (``find_lookback``, default 24 h, when this process did not send it),
100 a page, up to the 1,000 results GitHub returns for such a search.

State mapping (status, then conclusion once ``completed``; the meanings are GitHub's,
github/docs ``data/reusables/actions/workflow-run-statuses-2.md``): requested/queued/
pending/waiting -> queued, in_progress -> running; success -> succeeded, neutral ->
succeeded ("a completed but non-failing outcome"), failure/timed_out/startup_failure ->
failed, action_required -> failed ("terminal-but-actionable": the run stopped and needs
a person, so it did not do its work), cancelled -> cancelled, skipped/stale ->
superseded (not run, or "no longer relevant").
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from triggergate.backends._http import (
    HttpClient,
    HttpRefused,
    RetryPolicy,
    json_object,
)
from triggergate.backends.base import Backend, RunState, Started, StartRequest, Status
from triggergate.errors import BackendRefused, ConfigurationError
from triggergate.registry import Context
from triggergate.singleflight import SingleFlight

NAME = "github"
QUEUED = frozenset({"queued", "waiting", "pending", "requested"})
CONCLUSIONS: dict[str, RunState] = {
    "success": "succeeded",
    "neutral": "succeeded",
    "failure": "failed",
    "timed_out": "failed",
    "startup_failure": "failed",
    "action_required": "failed",
    "cancelled": "cancelled",
    "skipped": "superseded",
    "stale": "superseded",
}
PENDING_REF = "request:"
MAX_INPUTS = 25  # OpenAPI actions/create-workflow-dispatch: inputs "maxProperties": 25
PAGE = 100  # per_page maximum (OpenAPI components/parameters/per-page)
MAX_PAGES = 10  # actions/list-workflow-runs: "up to 1,000 results" with created/event
SKEW = 120.0  # seconds of clock difference tolerated between this host and GitHub


def run_state(run: dict[str, Any]) -> RunState:
    """A workflow-run object's state in the common vocabulary."""
    status = run.get("status")
    if status in QUEUED:
        return "queued"
    if status == "in_progress":
        return "running"
    if status == "completed":
        return CONCLUSIONS.get(str(run.get("conclusion")), "unknown")
    return "unknown"


def _detail(run: dict[str, Any]) -> str:
    if run.get("conclusion") == "action_required":
        return "GitHub stopped the run until a person acts on it (action_required)"
    return str(run.get("conclusion") or run.get("status") or "")


class GitHubBackend(Backend):
    """Dispatches one workflow of one repository."""

    name = "GitHub Actions"

    def __init__(
        self,
        ctx: Context,
        *,
        owner: str,
        repo: str,
        workflow: str,
        ref: str = "main",
        api: str = "https://api.github.com",
        correlation_input: str = "triggergate_id",
    ) -> None:
        self.ctx = ctx
        self.ref = ref
        self.correlation_input = correlation_input
        self.repo_url = f"{api.rstrip('/')}/repos/{quote(owner)}/{quote(repo)}/actions"
        self.workflow_url = f"{self.repo_url}/workflows/{quote(workflow)}"
        self.run_details = True
        self.find_wait = float(ctx.options.get("find_wait", 8.0))
        self.lookback = float(ctx.options.get("find_lookback", 86400.0))
        self.http = HttpClient(NAME, RetryPolicy.from_options(ctx.options))
        self._flight: SingleFlight[Started] = SingleFlight(remember=1024)
        self._sent: OrderedDict[str, float] = OrderedDict()  # request id -> when dispatched

    @classmethod
    def from_url(cls, url: str, ctx: Context) -> GitHubBackend:
        parts = urlsplit(url)
        path = [p for p in parts.path.split("/") if p]
        if not parts.netloc or len(path) != 2:
            raise ConfigurationError(
                "pipeline: expected github://OWNER/REPO/WORKFLOW_FILE?ref=BRANCH",
                key="pipeline",
                value=url,
            )
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        correlation = query.get("correlation_input", "triggergate_id")
        inputs = [name for name in ctx.params if name != "ref"] + ([correlation] if correlation else [])
        if len(inputs) > MAX_INPUTS:
            raise ConfigurationError(
                f"params: GitHub takes at most {MAX_INPUTS} workflow inputs and this gate would send "
                f"{len(inputs)} ({len(inputs) - bool(correlation)} allow-listed parameters"
                + (f" + the correlation input {correlation!r}" if correlation else "")
                + "); allow fewer parameters (ref does not count: it selects the branch)",
                key="params",
                value=len(inputs),
            )
        return cls(
            ctx,
            owner=parts.netloc,
            repo=path[0],
            workflow=path[1],
            ref=query.get("ref", "main"),
            api=query.get("api", "https://api.github.com"),
            correlation_input=correlation,
        )

    def _headers(self) -> dict[str, str]:
        token = self.ctx.secret("GITHUB_TOKEN")
        if not token:
            raise BackendRefused(f"{NAME}: TRIGGERGATE_GITHUB_TOKEN is not set", misconfigured=True)
        # https://docs.github.com/en/rest/using-the-rest-api/getting-started-with-the-rest-api
        return {
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
        }

    async def start(self, request: StartRequest) -> Started:
        return await self._flight.run(request.request_id, lambda: self._start(request))

    async def _start(self, request: StartRequest) -> Started:
        inputs = dict(request.params)
        if self.correlation_input:
            inputs[self.correlation_input] = request.request_id
        body: dict[str, Any] = {"ref": request.ref or self.ref, "inputs": inputs}
        self._sent[request.request_id] = self.ctx.clock()
        while len(self._sent) > 1024:
            self._sent.popitem(last=False)
        response = None
        if self.run_details:
            try:
                response = await self._dispatch({**body, "return_run_details": True})
            except HttpRefused as exc:
                # Servers without the 2026 parameter refuse the unknown key: nothing started.
                if exc.status not in (400, 422) or "return_run_details" not in exc.response.text:
                    raise
                self.run_details = False
        if response is None:
            response = await self._dispatch(body)
        if response.status_code == 200:
            details = json_object(response, NAME, "workflow dispatch")
            if details.get("workflow_run_id"):
                url = details.get("html_url")
                return Started(str(details["workflow_run_id"]), url if isinstance(url, str) else None)
        found = await self._wait_for_run(request.request_id)
        return found or Started(PENDING_REF + request.request_id)

    async def _dispatch(self, body: dict[str, Any]) -> Any:
        # https://docs.github.com/en/rest/actions/workflows#create-a-workflow-dispatch-event
        return await self.http.send(
            "POST",
            f"{self.workflow_url}/dispatches",
            "workflow dispatch",
            idempotent=False,
            ok=frozenset({200, 204}),
            json=body,
            headers=self._headers(),
        )

    async def _wait_for_run(self, request_id: str) -> Started | None:
        """Poll the run list a bounded time: a dispatched run is listed a few seconds later."""
        if not self.correlation_input:
            return None
        deadline = time.monotonic() + self.find_wait
        delay = 0.25
        while True:
            found = await self.find(request_id)
            if found is not None or time.monotonic() + delay > deadline:
                return found
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def find(self, request_id: str) -> Started | None:
        if not self.correlation_input:
            return None
        sent = self._sent.get(request_id)
        since = sent - SKEW if sent is not None else self.ctx.clock() - self.lookback
        params = {
            "event": "workflow_dispatch",
            "created": ">=" + time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since)),
            "per_page": str(PAGE),
        }
        for page in range(1, MAX_PAGES + 1):
            # https://docs.github.com/rest/actions/workflow-runs#list-workflow-runs-for-a-workflow
            response = await self.http.send(
                "GET",
                f"{self.workflow_url}/runs",
                "list workflow runs",
                idempotent=True,
                ok=frozenset({200}),
                params={**params, "page": str(page)},
                headers=self._headers(),
            )
            runs = json_object(response, NAME, "list workflow runs").get("workflow_runs") or []
            for run in runs:
                if (
                    isinstance(run, dict)
                    and run.get("event") == "workflow_dispatch"
                    and request_id in str(run.get("display_title", ""))
                ):
                    return Started(str(run["id"]), run.get("html_url"), run_state(run))
            if 'rel="next"' not in response.headers.get("Link", "") or len(runs) < PAGE:
                return None
        return None

    async def status(self, ref: str) -> Status:
        if ref.startswith(PENDING_REF):
            found = await self.find(ref.removeprefix(PENDING_REF))
            if found is None:
                return Status("unknown", detail="GitHub has not listed the run yet")
            return Status(found.state, found.url)
        # https://docs.github.com/en/rest/actions/workflow-runs#get-a-workflow-run
        response = await self.http.send(
            "GET",
            f"{self.repo_url}/runs/{quote(ref)}",
            "get workflow run",
            idempotent=True,
            ok=frozenset({200}),
            headers=self._headers(),
        )
        run = json_object(response, NAME, "get workflow run")
        url = run.get("html_url")
        return Status(run_state(run), url if isinstance(url, str) else None, _detail(run))

    async def close(self) -> None:
        await self.http.close()

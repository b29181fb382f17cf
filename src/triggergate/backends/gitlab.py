"""GitLab CI: ``gitlab://HOST/GROUP/SUBGROUP/PROJECT?ref=main``.

Starts a pipeline with the trigger API (``TRIGGERGATE_GITLAB_TRIGGER_TOKEN``,
sent as a form field in the POST body, never in the URL) and reads it with
the pipelines API (``TRIGGERGATE_GITLAB_READ_TOKEN``, a ``read_api`` token
sent as ``PRIVATE-TOKEN``). Self-hosted hosts work as they are; options:
``ref`` (default ``main``; a request's ``ref`` replaces it: it is the trigger's
``ref``, never a variable), ``scheme`` (``http`` only for loopback tests),
``correlation_variable`` (default ``TRIGGERGATE_ID``; empty turns it off).

The trigger answers 201 with the pipeline, so a clean start needs no correlation.
Only an uncertain start (a lost answer, a 5xx) needs :meth:`find`, two ways:

- with the correlation variable (the request id as ``variables[TRIGGERGATE_ID]``):
  the newest trigger pipelines (on the request's ref, or any ref after a restart; at
  most ``find_limit``, default 20) are read with their variables until one carries the
  id. It costs one variables read per pipeline, and the project must allow pipeline
  variables: GitLab.com refuses them by default in new namespaces ("Minimum role to
  use pipeline variables": ``no_one_allowed``), and then every trigger is refused;
- without it (``correlation_variable=``): trigger pipelines on the request's ref
  created within a few minutes of the attempt are listed; the only one this process
  has not already matched to another request is the run. It costs certainty: after a
  restart (the attempt is known to this process only), or with several candidates (a
  trigger token shared with others, several replicas), the start counts as not started
  and the slot is refunded although a pipeline may run.

Allow-listed parameters are pipeline variables too, so a project that refuses
pipeline variables can take none.

State mapping (``app/models/concerns/ci/has_status.rb``, ``app/models/commit_status.rb``):
created/waiting_for_resource/preparing/waiting_for_callback/pending/scheduled, and
manual (waiting for a person) -> queued; running, and canceling (jobs are still
stopping; it ends as canceled) -> running; success -> succeeded, failed -> failed,
canceled -> cancelled, skipped -> superseded.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from triggergate.backends._http import HttpClient, HttpRefused, RetryPolicy, json_object
from triggergate.backends.base import Backend, RunState, Started, StartRequest, Status
from triggergate.errors import BackendRefused, ConfigurationError
from triggergate.registry import Context
from triggergate.singleflight import SingleFlight

NAME = "gitlab"
STATES: dict[str, RunState] = {
    "created": "queued",
    "waiting_for_resource": "queued",
    "preparing": "queued",
    "waiting_for_callback": "queued",
    "pending": "queued",
    "scheduled": "queued",
    "manual": "queued",
    "running": "running",
    "canceling": "running",
    "success": "succeeded",
    "failed": "failed",
    "canceled": "cancelled",
    "skipped": "superseded",
}
SKEW = 120.0  # seconds of clock difference tolerated between this host and GitLab
REMEMBER = 1024


def _iso(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def pipeline_state(pipeline: dict[str, Any]) -> RunState:
    """A pipeline object's state in the common vocabulary."""
    return STATES.get(str(pipeline.get("status")), "unknown")


def _url(pipeline: dict[str, Any]) -> str | None:
    url = pipeline.get("web_url")
    return url if isinstance(url, str) else None


class GitLabBackend(Backend):
    """Triggers pipelines of one project on one GitLab instance."""

    name = "GitLab CI"

    def __init__(
        self,
        ctx: Context,
        *,
        host: str,
        project: str,
        ref: str = "main",
        scheme: str = "https",
        correlation_variable: str = "TRIGGERGATE_ID",
    ) -> None:
        self.ctx = ctx
        self.ref = ref
        self.correlation_variable = correlation_variable
        self.project_url = f"{scheme}://{host}/api/v4/projects/{quote(project, safe='')}"
        self.find_limit = int(ctx.options.get("find_limit", 20))
        self.lookback = float(ctx.options.get("find_lookback", 86400.0))
        self.http = HttpClient(NAME, RetryPolicy.from_options(ctx.options))
        self._flight: SingleFlight[Started] = SingleFlight(remember=REMEMBER)
        self._sent: OrderedDict[str, tuple[str, float]] = OrderedDict()  # id -> (ref, when)
        self._claimed: OrderedDict[str, str] = OrderedDict()  # pipeline id -> request id

    @classmethod
    def from_url(cls, url: str, ctx: Context) -> GitLabBackend:
        parts = urlsplit(url)
        project = parts.path.strip("/")
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        scheme = query.get("scheme", "https")
        if not parts.netloc or "/" not in project or scheme not in ("https", "http"):
            raise ConfigurationError(
                "pipeline: expected gitlab://HOST/GROUP/PROJECT?ref=BRANCH (scheme=https|http)",
                key="pipeline",
                value=url,
            )
        return cls(
            ctx,
            host=parts.netloc,
            project=project,
            ref=query.get("ref", "main"),
            scheme=scheme,
            correlation_variable=query.get("correlation_variable", "TRIGGERGATE_ID"),
        )

    def _secret(self, name: str) -> str:
        value = self.ctx.secret(name)
        if not value:
            raise BackendRefused(f"{NAME}: TRIGGERGATE_{name} is not set", misconfigured=True)
        return value

    async def start(self, request: StartRequest) -> Started:
        return await self._flight.run(request.request_id, lambda: self._start(request))

    async def _start(self, request: StartRequest) -> Started:
        ref = request.ref or self.ref
        form = {"token": self._secret("GITLAB_TRIGGER_TOKEN"), "ref": ref}
        variables = dict(request.params)
        if self.correlation_variable:
            variables[self.correlation_variable] = request.request_id
        for key, value in variables.items():
            form[f"variables[{key}]"] = value
        _remember(self._sent, request.request_id, (ref, self.ctx.clock()))
        try:
            # https://docs.gitlab.com/api/pipeline_triggers/#trigger-a-pipeline-with-a-token
            response = await self.http.send(
                "POST",
                f"{self.project_url}/trigger/pipeline",
                "trigger pipeline",
                idempotent=False,
                ok=frozenset({201}),
                data=form,
            )
        except HttpRefused as exc:
            if exc.status == 400 and "pipeline variables" in exc.response.text:
                raise BackendRefused(
                    f"{NAME}: trigger pipeline: HTTP 400: the project refuses pipeline variables "
                    "(Settings > CI/CD > Variables > Minimum role to use pipeline variables); "
                    "allow them, or set correlation_variable= and allow-list no parameters",
                    misconfigured=True,
                ) from exc
            raise
        pipeline = json_object(response, NAME, "trigger pipeline")
        _remember(self._claimed, str(pipeline["id"]), request.request_id)
        return Started(str(pipeline["id"]), _url(pipeline), pipeline_state(pipeline))

    async def _get(self, path: str, action: str, **params: str) -> Any:
        response = await self.http.send(
            "GET",
            f"{self.project_url}{path}",
            action,
            idempotent=True,
            ok=frozenset({200}),
            params=params,
            headers={"PRIVATE-TOKEN": self._secret("GITLAB_READ_TOKEN")},
        )
        try:
            return response.json()
        except ValueError:
            return None

    async def status(self, ref: str) -> Status:
        # https://docs.gitlab.com/api/pipelines/#get-a-single-pipeline
        pipeline = await self._get(f"/pipelines/{quote(ref)}", "get pipeline")
        if not isinstance(pipeline, dict):
            return Status("unknown", detail="GitLab answered without a pipeline")
        return Status(pipeline_state(pipeline), _url(pipeline))

    async def find(self, request_id: str) -> Started | None:
        sent = self._sent.get(request_id)
        if sent is None and not self.correlation_variable:
            return None  # nothing ties a pipeline to an attempt this process never made
        query = {"source": "trigger", "order_by": "id", "sort": "desc", "per_page": str(self.find_limit)}
        if sent is not None:
            ref, at = sent
            budget = self.http.policy.budget
            query.update(ref=ref, created_after=_iso(at - SKEW), created_before=_iso(at + budget + SKEW))
        else:
            query["created_after"] = _iso(self.ctx.clock() - self.lookback)
        # https://docs.gitlab.com/api/pipelines/#list-project-pipelines
        listed = await self._get("/pipelines", "list pipelines", **query)
        pipelines = [p for p in listed if isinstance(p, dict)] if isinstance(listed, list) else []
        if self.correlation_variable:
            match = await self._by_variable(pipelines, request_id)
        else:
            mine = [p for p in pipelines if self._claimed.get(str(p.get("id")), request_id) == request_id]
            match = mine[0] if len(mine) == 1 else None
        if match is None:
            return None
        _remember(self._claimed, str(match["id"]), request_id)
        return Started(str(match["id"]), _url(match), pipeline_state(match))

    async def _by_variable(self, pipelines: list[dict[str, Any]], request_id: str) -> dict[str, Any] | None:
        for pipeline in pipelines:
            # https://docs.gitlab.com/api/pipelines/#get-variables-of-a-pipeline
            variables = await self._get(f"/pipelines/{pipeline['id']}/variables", "pipeline variables")
            for variable in variables if isinstance(variables, list) else []:
                if variable.get("key") == self.correlation_variable and variable.get("value") == request_id:
                    return pipeline
        return None

    def notes(self) -> list[str]:
        if self.correlation_variable:
            notes = [
                f"gitlab: the request id travels as the pipeline variable {self.correlation_variable}, "
                "so an uncertain start is found on any ref; the project must allow pipeline "
                "variables (GitLab.com refuses them by default in new namespaces); "
                "correlation_variable= turns it off"
            ]
        else:
            notes = [
                "gitlab: no correlation variable: an uncertain start is matched to the only "
                "trigger pipeline on its ref from the time of the attempt, in this process only; "
                "after a restart or with several candidates it counts as not started (refunded)"
            ]
        if [name for name in self.ctx.params if name != "ref"]:
            notes.append(
                "gitlab: allow-listed parameters travel as pipeline variables: the project must allow them"
            )
        return notes

    async def close(self) -> None:
        await self.http.close()


def _remember(table: OrderedDict[str, Any], key: str, value: Any) -> None:
    table[key] = value
    table.move_to_end(key)
    while len(table) > REMEMBER:
        table.popitem(last=False)

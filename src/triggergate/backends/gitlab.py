"""GitLab CI: ``gitlab://HOST/GROUP/SUBGROUP/PROJECT?ref=main``.

Starts a pipeline with the trigger API (``TRIGGERGATE_GITLAB_TRIGGER_TOKEN``,
sent as a form field in the POST body, never in the URL) and reads it with
the pipelines API (``TRIGGERGATE_GITLAB_READ_TOKEN``, a ``read_api`` token
sent as ``PRIVATE-TOKEN``). Self-hosted hosts work as they are; options:
``ref`` (default ``main``), ``scheme`` (``http`` only for loopback tests),
``correlation_variable`` (default ``TRIGGERGATE_ID``, carries the request id).

State mapping: created/waiting_for_resource/preparing/pending/scheduled and
manual (waiting for a person) -> queued, running -> running, success ->
succeeded, failed -> failed, canceled/canceling -> cancelled, skipped ->
superseded. ``find()`` reads the variables of the newest triggered pipelines
on the ref (at most ``find_limit``, default 20): GitLab cannot filter
pipelines by variable.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from triggergate.backends._http import HttpClient, RetryPolicy, json_object
from triggergate.backends.base import Backend, RunState, Started, StartRequest, Status
from triggergate.errors import BackendRefused, ConfigurationError
from triggergate.registry import Context
from triggergate.singleflight import SingleFlight

NAME = "gitlab"
STATES: dict[str, RunState] = {
    "created": "queued",
    "waiting_for_resource": "queued",
    "preparing": "queued",
    "pending": "queued",
    "scheduled": "queued",
    "manual": "queued",
    "running": "running",
    "success": "succeeded",
    "failed": "failed",
    "canceled": "cancelled",
    "canceling": "cancelled",
    "skipped": "superseded",
}


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
        self.http = HttpClient(NAME, RetryPolicy.from_options(ctx.options))
        self._flight: SingleFlight[Started] = SingleFlight(remember=1024)

    @classmethod
    def from_url(cls, url: str, ctx: Context) -> GitLabBackend:
        parts = urlsplit(url)
        project = parts.path.strip("/")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
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
        form = {"token": self._secret("GITLAB_TRIGGER_TOKEN"), "ref": request.ref or self.ref}
        for key, value in {**request.params, self.correlation_variable: request.request_id}.items():
            form[f"variables[{key}]"] = value
        # https://docs.gitlab.com/api/pipeline_triggers/#trigger-a-pipeline-with-a-token
        response = await self.http.send(
            "POST",
            f"{self.project_url}/trigger/pipeline",
            "trigger pipeline",
            idempotent=False,
            ok=frozenset({201}),
            data=form,
        )
        pipeline = json_object(response, NAME, "trigger pipeline")
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
        # https://docs.gitlab.com/api/pipelines/#list-project-pipelines
        pipelines = await self._get(
            "/pipelines",
            "list pipelines",
            ref=self.ref,
            source="trigger",
            order_by="id",
            sort="desc",
            per_page=str(self.find_limit),
        )
        for pipeline in pipelines if isinstance(pipelines, list) else []:
            # https://docs.gitlab.com/api/pipelines/#get-variables-of-a-pipeline
            variables = await self._get(f"/pipelines/{pipeline['id']}/variables", "pipeline variables")
            for variable in variables if isinstance(variables, list) else []:
                if variable.get("key") == self.correlation_variable and variable.get("value") == request_id:
                    return Started(str(pipeline["id"]), _url(pipeline), pipeline_state(pipeline))
        return None

    async def close(self) -> None:
        await self.http.close()

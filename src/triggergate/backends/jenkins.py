"""Jenkins: ``jenkins+https://HOST/job/NAME`` (folders: ``/job/FOLDER/job/NAME``).

Starts a build with ``buildWithParameters`` using ``TRIGGERGATE_JENKINS_USER``
and ``TRIGGERGATE_JENKINS_TOKEN`` (an API token, basic auth). Jenkins skips
CSRF crumbs for API-token requests since 2.96; when a server still asks (403
naming the crumb) the crumb is fetched once, cached with its session cookie,
and the start sent again — safe, since a 403 started nothing.

The request id goes in as the parameter ``TRIGGERGATE_ID`` (``correlation_param``):
the job must declare it (Jenkins drops undeclared parameters). A request's ``ref``
goes in as the job parameter named by ``ref_param`` (e.g. ``?ref_param=BRANCH``);
without it a job takes no ref, and allow-listing ``ref`` is a configuration error.

``buildWithParameters`` answers as ``ParametersDefinitionProperty.buildWithParameters``
(Jenkins core) does: 201 and the new queue item; 303 and the existing queue item the
request was merged into (``Queue.schedule2`` folds a request whose parameters equal a
waiting item's; with the unique correlation parameter that is this same request sent
again), which is joined as the run; 302 to the job when nothing was queued (a queue
decision refused it), a definite refusal. A disabled job is 409.

The run reference is ``queue:N`` until the queue item has a build, then
``build:N``; ``status`` resolves either (a queue item Jenkins has forgotten
is matched to its build by ``queueId``). State mapping: in the queue ->
queued (a cancelled item -> cancelled), building -> running, SUCCESS ->
succeeded, FAILURE/UNSTABLE -> failed, ABORTED -> cancelled, NOT_BUILT ->
superseded.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

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

NAME = "jenkins"
RESULTS: dict[str, RunState] = {
    "SUCCESS": "succeeded",
    "FAILURE": "failed",
    "UNSTABLE": "failed",
    "ABORTED": "cancelled",
    "NOT_BUILT": "superseded",
}
QUEUE_ITEM = re.compile(r"/queue/item/(\d+)/?$")
BUILDS_TREE = "builds[number,url,queueId,building,result,actions[parameters[name,value]]]{0,50}"


def build_status(build: dict[str, Any]) -> Status:
    """A build object's state in the common vocabulary."""
    url = build.get("url") if isinstance(build.get("url"), str) else None
    if build.get("building"):
        return Status("running", url)
    return Status(RESULTS.get(str(build.get("result")), "unknown"), url)


def _param(item: dict[str, Any], name: str) -> object:
    for action in item.get("actions") or []:
        for parameter in (action or {}).get("parameters") or []:
            if parameter.get("name") == name:
                return parameter.get("value")
    return None


class JenkinsBackend(Backend):
    """Builds one (possibly foldered) parameterised job."""

    name = "Jenkins"

    def __init__(
        self, ctx: Context, *, root: str, job_path: str, correlation: str, ref_param: str = ""
    ) -> None:
        self.ctx = ctx
        self.root = root.rstrip("/")
        self.job_url = self.root + job_path.rstrip("/")
        self.correlation = correlation
        self.ref_param = ref_param
        self.http = HttpClient(NAME, RetryPolicy.from_options(ctx.options))
        self._flight: SingleFlight[Started] = SingleFlight(remember=1024)
        self._crumb: dict[str, str] = {}
        self._builds: dict[str, str] = {}  # queue id -> build number, once known

    @classmethod
    def from_url(cls, url: str, ctx: Context) -> JenkinsBackend:
        parts = urlsplit(url)
        scheme = parts.scheme.partition("+")[2]
        root, sep, job = parts.path.partition("/job/")
        if scheme not in ("https", "http") or not parts.netloc or not sep or not job.strip("/"):
            raise ConfigurationError(
                "pipeline: expected jenkins+https://HOST/job/NAME (folders: /job/F/job/NAME)",
                key="pipeline",
                value=url,
            )
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        ref_param = query.get("ref_param", "")
        if "ref" in ctx.params and not ref_param:
            raise ConfigurationError(
                "params: a Jenkins job takes a ref only as a job parameter: add "
                "ref_param=NAME (the job's branch parameter) to the pipeline URL",
                key="params",
                value="ref",
            )
        return cls(
            ctx,
            root=f"{scheme}://{parts.netloc}{root}",
            job_path="/job/" + job,
            correlation=query.get("correlation_param", "TRIGGERGATE_ID"),
            ref_param=ref_param,
        )

    def _auth(self) -> httpx.BasicAuth:
        user, token = self.ctx.secret("JENKINS_USER"), self.ctx.secret("JENKINS_TOKEN")
        if not user or not token:
            raise BackendRefused(
                f"{NAME}: TRIGGERGATE_JENKINS_USER and TRIGGERGATE_JENKINS_TOKEN must be set",
                misconfigured=True,
            )
        return httpx.BasicAuth(user, token)

    async def start(self, request: StartRequest) -> Started:
        return await self._flight.run(request.request_id, lambda: self._start(request))

    async def _start(self, request: StartRequest) -> Started:
        form = {**request.params, self.correlation: request.request_id}
        if request.ref is not None:
            if not self.ref_param:
                raise BackendRefused(f"{NAME}: this job takes no ref (set ref_param=)", misconfigured=True)
            form[self.ref_param] = request.ref
        try:
            response = await self._build(form)
        except HttpRefused as exc:
            # https://www.jenkins.io/doc/book/security/csrf-protection/
            if exc.status != 403 or "crumb" not in exc.response.text.lower():
                raise
            await self._fetch_crumb()
            response = await self._build(form)
        if response.status_code == 302:  # sendRedirect("."): schedule2 queued nothing
            raise BackendRefused(
                f"{NAME}: buildWithParameters: HTTP 302: Jenkins queued nothing "
                "(a queue decision handler refused the build)",
                misconfigured=True,
            )
        match = QUEUE_ITEM.search(response.headers.get("Location", ""))
        if match is None:
            raise BackendRefused(f"{NAME}: buildWithParameters answered without a queue item")
        # 201: a new queue item; 303: the waiting item this request was merged into.
        return Started(f"queue:{match.group(1)}")

    async def _build(self, form: dict[str, str]) -> httpx.Response:
        # https://www.jenkins.io/doc/book/using/remote-access-api/ (Submitting jobs)
        return await self.http.send(
            "POST",
            f"{self.job_url}/buildWithParameters",
            "buildWithParameters",
            idempotent=False,
            ok=frozenset({201, 302, 303}),
            data=form,
            headers=self._crumb,
            auth=self._auth(),
        )

    async def _fetch_crumb(self) -> None:
        # The crumb is bound to the session cookie the client keeps from this answer.
        crumb = await self._get(f"{self.root}/crumbIssuer/api/json", "crumb issuer")
        self._crumb = {str(crumb["crumbRequestField"]): str(crumb["crumb"])}

    async def _get(self, url: str, action: str, **params: str) -> dict[str, Any]:
        response = await self.http.send(
            "GET",
            url,
            action,
            idempotent=True,
            ok=frozenset({200}),
            params=params,
            auth=self._auth(),
        )
        return json_object(response, NAME, action)

    async def status(self, ref: str) -> Status:
        kind, _, number = ref.partition(":")
        if kind == "queue" and number in self._builds:
            kind, number = "build", self._builds[number]
        if kind == "build":
            return build_status(await self._get(f"{self.job_url}/{number}/api/json", "get build"))
        if kind != "queue" or not number.isdigit():
            return Status("unknown", detail="not a Jenkins run reference")
        try:
            # https://www.jenkins.io/doc/book/using/remote-access-api/ (queue item api/json)
            item = await self._get(f"{self.root}/queue/item/{number}/api/json", "get queue item")
        except HttpRefused as exc:
            if exc.status != 404:
                raise
            # Jenkins forgets a queue item minutes after it left the queue.
            return await self._build_by_queue_id(number)
        if item.get("cancelled"):
            return Status("cancelled", detail="cancelled in the queue")
        executable = item.get("executable") or {}
        if "number" not in executable:
            return Status("queued", detail=str(item.get("why") or ""))
        self._builds[number] = str(executable["number"])
        return await self.status(f"build:{executable['number']}")

    async def _build_by_queue_id(self, queue_id: str) -> Status:
        job = await self._get(f"{self.job_url}/api/json", "list builds", tree=BUILDS_TREE)
        for build in job.get("builds") or []:
            if str(build.get("queueId")) == queue_id:
                self._builds[queue_id] = str(build["number"])
                return build_status(build)
        return Status("unknown", detail="Jenkins no longer lists this run")

    async def find(self, request_id: str) -> Started | None:
        queue = await self._get(
            f"{self.root}/queue/api/json",
            "list queue",
            tree="items[id,task[url],actions[parameters[name,value]]]",
        )
        for item in queue.get("items") or []:
            if _param(item, self.correlation) == request_id:
                return Started(f"queue:{item['id']}")
        job = await self._get(f"{self.job_url}/api/json", "list builds", tree=BUILDS_TREE)
        for build in job.get("builds") or []:
            if _param(build, self.correlation) == request_id:
                status = build_status(build)
                return Started(f"build:{build['number']}", status.url, status.state)
        return None

    async def close(self) -> None:
        await self.http.close()

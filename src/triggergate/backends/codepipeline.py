"""AWS CodePipeline: ``codepipeline://NAME?region=R&endpoint_url=U``.

Starts with ``StartPipelineExecution`` and ``clientRequestToken`` = the request
id (an ``idempotencyToken`` in the service model), so any retry of the same start
(ours after a throttle, a busy pipeline, a 5xx or a lost answer) yields the same
execution instead of a second run. Allow-listed request parameters become pipeline
variables (a V2 pipeline must declare them; a value may not be empty: the model's
``PipelineVariableValue`` has ``min`` 1). A request's ``ref`` is never a variable: it
overrides the source revision of ``source_action`` (``sourceRevisions``); a pipeline
URL without ``source_action`` takes no ref, and allow-listing ``ref`` for it is a
configuration error.

URL options: ``source_action`` (the source action whose revision a request's
``ref`` overrides, as ``sourceRevisions``), ``revision_type`` (default
``COMMIT_ID``), ``revision`` (a fixed revision when the request has no ref),
``request_variable`` (a pipeline variable that receives the request id; it
must be declared in the pipeline, and it is what lets :meth:`find` recognise
an execution: ``ListPipelineExecutions`` does not return the client token, so
without it ``find`` cannot tell and raises ``BackendCannotFind``: an uncertain
start is then held as uncertain, its slot counted, never refunded on a guess).

Errors, after the service model (botocore ``codepipeline/2015-07-09/service-2.json``,
``StartPipelineExecution`` errors): throttling, ``ConflictException`` ("the pipeline is
busy handling ongoing activities. Try again later"),
``ConcurrentPipelineExecutionsLimitExceededException``, 5xx and lost connections are
retried with jittered backoff inside a time budget (options ``http_attempts``,
``http_backoff``, ``http_budget``, ``http_timeout``, as for the HTTP backends). When the
budget is spent, a busy or throttled pipeline is a definite failure (no execution
started; the slot is refunded, with a Retry-After), a 5xx or lost answer an uncertain
one. Errors raised before anything is sent (no credentials, a parameter outside the
model such as an empty variable value) and a missing pipeline, denied access or invalid
input (``ValidationException``) are a ``BackendRefused`` with ``misconfigured=True``
naming the problem for the operator (never the ARN).

State mapping (``PipelineExecutionStatus``): InProgress -> running, Stopping -> running
(the execution is still stopping; it ends Stopped), Stopped/Cancelled -> cancelled,
Succeeded -> succeeded, Superseded -> superseded, Failed -> failed.
"""

from __future__ import annotations

import asyncio
import random
import re
import threading
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from triggergate.aws.clients import AwsUrl, make_client, parse_url
from triggergate.backends._http import RetryPolicy
from triggergate.backends.base import Backend, RunState, Started, StartRequest, Status
from triggergate.errors import (
    BackendCannotFind,
    BackendError,
    BackendRefused,
    BackendUncertain,
    ConfigurationError,
)
from triggergate.registry import Context

if TYPE_CHECKING:
    from mypy_boto3_codepipeline import CodePipelineClient

STATES: dict[str, RunState] = {
    "InProgress": "running",
    "Stopping": "running",
    "Stopped": "cancelled",
    "Cancelled": "cancelled",
    "Succeeded": "succeeded",
    "Superseded": "superseded",
    "Failed": "failed",
}
THROTTLED = frozenset(
    {"ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded"}
)
# StartPipelineExecution errors that say "not now": nothing started, try again later.
BUSY = {
    "ConflictException": "the pipeline is busy; try again later",
    "ConcurrentPipelineExecutionsLimitExceededException": "the pipeline runs its maximum of executions",
}
# Raised by botocore before any request is sent: nothing can have started.
NOT_SENT_HINTS = {
    "NoCredentialsError": "no AWS credentials were found",
    "PartialCredentialsError": "the AWS credentials are incomplete",
    "CredentialRetrievalError": "the AWS credentials could not be obtained",
    "NoRegionError": "no AWS region is configured",
    "ParamValidationError": "a request value does not fit the CodePipeline model (an empty variable?)",
}
MISCONFIGURED = {
    "PipelineNotFoundException": "the pipeline does not exist in this account and region",
    "AccessDeniedException": "the execution role may not use this pipeline",
    "UnrecognizedClientException": "the AWS credentials are not valid",
    "ValidationException": "the pipeline refused the request (undeclared variable or revision?)",
    "InvalidParameterValueException": "the pipeline refused a parameter",
}
_NAME = re.compile(r"^[A-Za-z0-9.@_-]{1,100}$")
_PARAMS = (
    "request_variable",
    "revision",
    "revision_type",
    "source_action",
)
FIND_PAGES = 2  # ListPipelineExecutions pages of 25 searched by find(): the 50 newest executions


class CodePipelineBackend(Backend):
    """Starts executions of one pipeline and reads their status."""

    name = "AWS CodePipeline"

    def __init__(self, where: AwsUrl, policy: RetryPolicy) -> None:
        self.where, self.pipeline, self.region, self.policy = (
            where,
            where.location,
            where.region,
            policy,
        )
        self.source_action = where.query.get("source_action", "")
        self.revision_type = where.query.get("revision_type") or "COMMIT_ID"
        self.revision = where.query.get("revision", "")
        self.request_variable = where.query.get("request_variable", "")
        self._client: CodePipelineClient | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, ctx: Context) -> CodePipelineBackend:
        where = parse_url(url, ctx, "pipeline", _PARAMS)
        problem = (
            "write codepipeline://PIPELINE_NAME?region=REGION"
            if not _NAME.match(where.location)
            else "revision needs source_action"
            if where.query.get("revision") and not where.query.get("source_action")
            else ""
        )
        if problem:
            raise ConfigurationError(f"pipeline: {problem}", key="pipeline", value=url)
        if "ref" in ctx.params and not where.query.get("source_action"):
            raise ConfigurationError(
                "params: a CodePipeline ref overrides a source revision: add source_action=ACTION "
                "(the source action's name) to the pipeline URL",
                key="params",
                value="ref",
            )
        return cls(where, RetryPolicy.from_options(ctx.options))

    @property
    def client(self) -> CodePipelineClient:
        with self._lock:
            if self._client is None:
                # Our loop retries (one botocore attempt each), so the budget holds.
                self._client = make_client(
                    "codepipeline", self.where, timeout=self.policy.timeout, attempts=1
                )
            return self._client

    def prepare(self) -> None:
        _ = self.client  # built before serving, never inside a request

    async def _call(self, action: str, **kwargs: Any) -> dict[str, Any]:
        """One API action, retried while the failure is transient and the budget lasts."""
        deadline = time.monotonic() + self.policy.budget
        uncertain = False
        for attempt in range(self.policy.attempts):
            try:
                method = getattr(self.client, action)
                answer: dict[str, Any] = await asyncio.to_thread(method, **kwargs)
                return answer
            except Exception as exc:
                kind, code = _classify(exc)
                if kind == "refused":
                    hint = MISCONFIGURED.get(code, "the request was refused")
                    raise BackendRefused(
                        f"codepipeline: {action} {code}: {hint}",
                        misconfigured=code in MISCONFIGURED,
                    ) from exc
                if kind == "not_sent":
                    raise BackendRefused(
                        f"codepipeline: {action} not sent ({code}): {NOT_SENT_HINTS[code]}",
                        misconfigured=True,
                    ) from exc
                uncertain = uncertain or kind == "uncertain"
                delay = random.uniform(0, min(self.policy.cap, self.policy.base * 2**attempt))  # noqa: S311
                last_try = attempt + 1 >= self.policy.attempts
                if last_try or time.monotonic() + delay > deadline:
                    message = f"codepipeline: {action} gave up after {attempt + 1} tries ({code})"
                    if uncertain:
                        raise BackendUncertain(message, retry_after=delay) from exc
                    if kind == "busy":
                        refused = BackendRefused(f"{message}: {BUSY[code]}")
                        refused.retry_after = max(delay, 1.0)
                        raise refused from exc
                    raise BackendError(message, definite=True, retry_after=delay) from exc
                await asyncio.sleep(delay)
        raise BackendError("codepipeline: no attempt allowed", definite=True)

    def _console(self, execution_id: str) -> str:
        return (
            f"https://{self.region}.console.aws.amazon.com/codesuite/codepipeline/pipelines/"
            f"{quote(self.pipeline)}/executions/{quote(execution_id)}/timeline?region={self.region}"
        )

    async def start(self, request: StartRequest) -> Started:
        kwargs: dict[str, Any] = {"name": self.pipeline, "clientRequestToken": request.request_id}
        variables = [{"name": k, "value": v} for k, v in sorted(request.params.items())]
        if self.request_variable:
            variables.append({"name": self.request_variable, "value": request.request_id})
        if variables:
            kwargs["variables"] = variables
        if request.ref is not None and not self.source_action:
            raise BackendRefused(
                "codepipeline: this pipeline takes no ref (set source_action=)", misconfigured=True
            )
        revision = request.ref or self.revision
        if self.source_action and revision:
            kwargs["sourceRevisions"] = [
                {
                    "actionName": self.source_action,
                    "revisionType": self.revision_type,
                    "revisionValue": revision,
                }
            ]
        answer = await self._call("start_pipeline_execution", **kwargs)
        execution_id = str(answer["pipelineExecutionId"])
        return Started(ref=execution_id, url=self._console(execution_id), state="running")

    async def status(self, ref: str) -> Status:
        try:
            answer = await self._call(
                "get_pipeline_execution", pipelineName=self.pipeline, pipelineExecutionId=ref
            )
        except BackendRefused as exc:
            if "PipelineExecutionNotFound" in str(exc):
                return Status("unknown", detail="no such execution")
            raise
        raw = str(answer.get("pipelineExecution", {}).get("status", ""))
        return Status(STATES.get(raw, "unknown"), url=self._console(ref), detail=raw)

    async def find(self, request_id: str) -> Started | None:
        if not self.request_variable:
            # botocore codepipeline service-2.json: neither PipelineExecutionSummary nor
            # PipelineExecution carries the clientRequestToken, so without our variable
            # no execution can be matched to a request.
            raise BackendCannotFind("codepipeline: runs cannot be looked up without request_variable")
        kwargs: dict[str, Any] = {"pipelineName": self.pipeline, "maxResults": 25}
        for _ in range(FIND_PAGES):
            page = await self._call("list_pipeline_executions", **kwargs)
            for summary in page.get("pipelineExecutionSummaries", []):
                if summary.get("trigger", {}).get("triggerType") != "StartPipelineExecution":
                    continue
                execution_id = str(summary["pipelineExecutionId"])
                detail = await self._call(
                    "get_pipeline_execution",
                    pipelineName=self.pipeline,
                    pipelineExecutionId=execution_id,
                )
                variables = detail.get("pipelineExecution", {}).get("variables", [])
                if {"name": self.request_variable, "resolvedValue": request_id} in variables:
                    state = STATES.get(str(summary.get("status")), "unknown")
                    return Started(ref=execution_id, url=self._console(execution_id), state=state)
            if not page.get("nextToken"):
                break
            kwargs["nextToken"] = page["nextToken"]
        return None

    async def ping(self) -> None:
        await self._call("get_pipeline", name=self.pipeline)


def _classify(exc: BaseException) -> tuple[str, str]:
    """(kind, code): may a run have started, may we retry. Kinds: "retry" (nothing started),
    "busy" (refused for now: retry), "uncertain" (it may have started: retry with the same
    token), "refused" (definite), "not_sent" (raised before sending: definite)."""
    from botocore.exceptions import (
        ClientError,
        ConnectTimeoutError,
        CredentialRetrievalError,
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
        ParamValidationError,
        PartialCredentialsError,
        ProxyConnectionError,
    )

    name = type(exc).__name__
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", "error"))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        if code in THROTTLED or status == 429:
            return "retry", code
        if code in BUSY:
            return "busy", code
        if status >= 500:
            return "uncertain", code or str(status)
        return "refused", code
    if isinstance(exc, ConnectTimeoutError | EndpointConnectionError | ProxyConnectionError):
        return "retry", name  # never sent: nothing can have started
    for before_sending in (
        NoCredentialsError,
        PartialCredentialsError,
        CredentialRetrievalError,
        NoRegionError,
        ParamValidationError,
    ):
        if isinstance(exc, before_sending):
            return "not_sent", before_sending.__name__
    return "uncertain", name  # read timeout, dropped connection: it may have

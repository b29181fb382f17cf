"""A CodePipeline contract server on the JSON 1.1 protocol, modelled on the service model.

The publication is botocore's ``botocore/data/codepipeline/2015-07-09/service-2.json``,
loaded here from the installed botocore, so the server cannot drift from it:

- operations ``StartPipelineExecution``, ``GetPipelineExecution``,
  ``ListPipelineExecutions``, ``GetPipeline``; an error an operation answers must be one
  of its modelled ``errors`` (or an AWS common error: ``ThrottlingException``,
  ``InternalFailure``, ``ServiceUnavailable``;
  https://docs.aws.amazon.com/codepipeline/latest/APIReference/CommonErrors.html);
- ``StartPipelineExecutionInput``: ``name`` required; ``variables`` at most 50, names
  matching ``PipelineVariableName``, values 1 to 1000 characters (``PipelineVariableValue``);
  ``sourceRevisions`` naming a source action with a ``SourceRevisionType``;
  ``clientRequestToken`` is an ``idempotencyToken``: the same token gives the same
  execution;
- a V2 pipeline refuses a variable it does not declare with ``ValidationException``
  (CodePipeline user guide, "Variables": pipeline-level variables are declared in the
  pipeline; known behaviour, not in the model);
- ``PipelineExecutionStatus`` values, read in the order ``statuses`` gives.

Errors are HTTP 400 (client) or 500/503 (server) with ``{"__type", "message"}``, the
JSON 1.1 protocol's error shape, which botocore turns into ``ClientError`` codes.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import botocore.session

MODEL = botocore.session.get_session().get_service_model("codepipeline")
TARGET = MODEL.metadata["targetPrefix"] + "."
COMMON_ERRORS = {"ThrottlingException": 400, "InternalFailure": 500, "ServiceUnavailable": 503}
STATUSES = tuple(MODEL.shape_for("PipelineExecutionStatus").enum)


def _constraint(shape: str, key: str) -> Any:
    return MODEL.shape_for(shape).metadata[key]


class Refusal(Exception):
    """An error answer: a modelled error code and its message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class CodePipelineState:
    """What the fake CodePipeline holds; tests read and tune it."""

    name: str = "deploy"
    declared: dict[str, str] = field(
        default_factory=lambda: {"TARGET": "staging", "target": "staging", "TG_ID": "none"}
    )
    source_actions: set[str] = field(default_factory=lambda: {"Source"})
    statuses: list[str] = field(default_factory=lambda: ["InProgress", "Succeeded"])
    faults: list[str] = field(default_factory=list)  # error codes, answered before processing
    always: str = ""  # an error code answered to every StartPipelineExecution
    executions: list[dict[str, Any]] = field(default_factory=list)
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def starts(self) -> int:
        return sum(1 for op, _ in self.requests if op == "StartPipelineExecution")


def _start(state: CodePipelineState, body: dict[str, Any]) -> dict[str, Any]:
    if body.get("name") != state.name:
        raise Refusal(
            "PipelineNotFoundException", f"Account does not have a pipeline with name {body.get('name')}"
        )
    variables = body.get("variables") or []
    if len(variables) > _constraint("PipelineVariableList", "max"):
        raise Refusal("ValidationException", "too many variables")
    name_pattern = re.compile(_constraint("PipelineVariableName", "pattern"))
    for variable in variables:
        name, value = variable.get("name", ""), variable.get("value", "")
        if not name_pattern.fullmatch(name) or not 1 <= len(value) <= _constraint(
            "PipelineVariableValue", "max"
        ):
            raise Refusal("ValidationException", f"invalid variable {name!r}")
        if name not in state.declared:
            raise Refusal("ValidationException", f"Variable {name} is not defined in the pipeline")
    for revision in body.get("sourceRevisions") or []:
        if revision.get("actionName") not in state.source_actions:
            raise Refusal("ValidationException", "sourceRevisions names no source action of the pipeline")
        if revision.get("revisionType") not in MODEL.shape_for("SourceRevisionType").enum:
            raise Refusal("ValidationException", "unknown revisionType")
    token = body.get("clientRequestToken")
    for execution in state.executions:  # idempotencyToken: the same request, the same execution
        if token and execution["token"] == token:
            return {"pipelineExecutionId": execution["id"]}
    resolved = {**state.declared, **{v["name"]: v["value"] for v in variables}}
    state.executions.append(
        {
            "id": str(uuid.uuid4()),
            "token": token,
            "reads": 0,
            "variables": [{"name": k, "resolvedValue": v} for k, v in resolved.items()],
            "sourceRevisions": body.get("sourceRevisions") or [],
        }
    )
    return {"pipelineExecutionId": state.executions[-1]["id"]}


def _execution(state: CodePipelineState, body: dict[str, Any]) -> dict[str, Any]:
    if body.get("pipelineName") != state.name:
        raise Refusal("PipelineNotFoundException", "no such pipeline")
    for execution in state.executions:
        if execution["id"] == body.get("pipelineExecutionId"):
            status = state.statuses[min(execution["reads"], len(state.statuses) - 1)]
            execution["reads"] += 1
            return {
                "pipelineExecution": {
                    "pipelineName": state.name,
                    "pipelineExecutionId": execution["id"],
                    "status": status,
                    "variables": execution["variables"],
                    "trigger": {"triggerType": "StartPipelineExecution"},
                }
            }
    raise Refusal("PipelineExecutionNotFoundException", "no such execution")


def _list(state: CodePipelineState, body: dict[str, Any]) -> dict[str, Any]:
    if body.get("pipelineName") != state.name:
        raise Refusal("PipelineNotFoundException", "no such pipeline")
    newest = list(reversed(state.executions))
    start = int(body.get("nextToken") or 0)
    size = int(body.get("maxResults") or 100)
    page = newest[start : start + size]
    answer: dict[str, Any] = {
        "pipelineExecutionSummaries": [
            {
                "pipelineExecutionId": e["id"],
                "status": state.statuses[min(e["reads"], len(state.statuses) - 1)],
                "trigger": {"triggerType": "StartPipelineExecution"},
            }
            for e in page
        ]
    }
    if start + size < len(newest):
        answer["nextToken"] = str(start + size)
    return answer


HANDLERS = {
    "StartPipelineExecution": _start,
    "GetPipelineExecution": _execution,
    "ListPipelineExecutions": _list,
    "GetPipeline": lambda state, body: {"pipeline": {"name": state.name, "version": 1}},
}


def _status_of(operation: str, code: str) -> int:
    modelled = {shape.name for shape in MODEL.operation_model(operation).error_shapes}
    assert code in modelled or code in COMMON_ERRORS, f"{operation} cannot answer {code}"
    return COMMON_ERRORS.get(code, 400)


@contextmanager
def serve(state: CodePipelineState) -> Iterator[str]:
    """Serve the contract on a free 127.0.0.1 port; yield its endpoint URL; stop it."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            operation = str(self.headers.get("X-Amz-Target", "")).removeprefix(TARGET)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
            status, answer = 200, {}
            with state.lock:
                state.requests.append((operation, body))
                fault = state.faults.pop(0) if state.faults else ""
                if not fault and operation == "StartPipelineExecution":
                    fault = state.always
                try:
                    if fault:
                        raise Refusal(fault, "injected")
                    answer = HANDLERS[operation](state, body)
                except Refusal as refusal:
                    status = _status_of(operation, refusal.code)
                    answer = {"__type": refusal.code, "message": str(refusal)}
            payload = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/x-amz-json-1.1")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

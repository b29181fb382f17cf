"""A GitLab contract server: pipeline trigger, pipeline read, list, variables.

Shapes and rules come from these pages:
- trigger (form fields token, ref, variables[KEY]; 201 + pipeline):
  https://docs.gitlab.com/api/pipeline_triggers/#trigger-a-pipeline-with-a-token
- read: https://docs.gitlab.com/api/pipelines/#get-a-single-pipeline
- list: https://docs.gitlab.com/api/pipelines/#list-project-pipelines
- variables: https://docs.gitlab.com/api/pipelines/#get-variables-of-a-pipeline
- URL-encoded project path, PRIVATE-TOKEN header, status codes and the
  {"message": ...} error shape: https://docs.gitlab.com/api/rest/ and
  https://docs.gitlab.com/api/rest/troubleshooting/
- 429 with Retry-After: https://docs.gitlab.com/security/rate_limits/
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from tests.backends.contract._server import Faults

TRIGGER_TOKEN = "glptt-contractTRIGGERtoken0123456789"
READ_TOKEN = "glpat-contractREADtoken9876543210xyz"
PROJECT = "acme/platform/site"
FORM = "application/x-www-form-urlencoded"
PHASES = ["created", "pending", "running", ""]  # "" is the final status


def error_body(status: int) -> tuple[bytes, str]:
    text = {
        400: "Bad request",
        401: "Unauthorized",
        403: "Forbidden",
        404: "Not Found",
        429: "Too Many Requests",
    }.get(status, "Internal Server Error")
    return json.dumps({"message": f"{status} {text}"}).encode(), "application/json"


def error(status: int, message: Any = None) -> JSONResponse:
    if message is None:
        return JSONResponse(json.loads(error_body(status)[0]), status)
    return JSONResponse({"message": message}, status)


@dataclass
class GitLabState:
    """What the fake GitLab holds; tests read and tune it."""

    project: str = PROJECT
    project_id: int = 278964
    branches: set[str] = field(default_factory=lambda: {"main"})
    final: str = "success"
    pipelines: list[dict[str, Any]] = field(default_factory=list)
    faults: Faults = field(default_factory=lambda: Faults(error_body))


def build_app(state: GitLabState, host: str = "gitlab.example.com") -> Any:
    def shown(p: dict[str, Any]) -> dict[str, Any]:
        status = PHASES[min(p["phase"], len(PHASES) - 1)] or state.final
        return {
            "id": p["id"],
            "iid": p["id"] - 1000,
            "project_id": state.project_id,
            "sha": "a91957a8",
            "ref": p["ref"],
            "status": status,
            "source": "trigger",
            "created_at": "2026-11-26T12:00:00.000Z",
            "web_url": f"https://{host}/{state.project}/-/pipelines/{p['id']}",
        }

    async def trigger(request: Request) -> Response:
        if request.headers.get("content-type", "").split(";")[0] != FORM:
            return error(400, "token is missing")
        pairs = parse_qsl((await request.body()).decode(), keep_blank_values=True)
        form = dict(pairs)
        if form.get("token") != TRIGGER_TOKEN:
            return error(404)  # an unknown trigger token reads as an unknown project
        ref = form.get("ref")
        if not isinstance(ref, str) or not ref:
            return error(400, "ref is missing")  # the doc's 400 for a missing parameter
        if ref not in state.branches:
            return error(400, {"base": ["Reference not found"]})
        variables = {}
        for key, value in pairs:
            if key in ("token", "ref"):
                continue
            if not (key.startswith("variables[") and key.endswith("]")):
                return error(400, f"{key} is invalid")
            variables[key[10:-1]] = value
        pipeline = {
            "id": 1000 + len(state.pipelines) + 1,
            "ref": ref,
            "phase": 0,
            "variables": variables,
        }
        state.pipelines.append(pipeline)
        return JSONResponse(shown(pipeline), 201)

    def find(pipeline_id: str) -> dict[str, Any] | None:
        return next((p for p in state.pipelines if str(p["id"]) == pipeline_id), None)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        # The project path must arrive URL-encoded as one segment (group%2Fproject).
        raw = scope["raw_path"].decode()
        prefix = "/api/v4/projects/"
        parts = raw[len(prefix) :].split("/") if raw.startswith(prefix) else []
        response: Response
        if not parts or unquote(parts[0]) != state.project or "%2F" not in parts[0].upper():
            response = error(404, "404 Project Not Found")
        elif parts[1:] == ["trigger", "pipeline"] and request.method == "POST":
            response = await trigger(request)
        elif request.method != "GET" or parts[1:2] != ["pipelines"]:
            response = error(404)
        elif request.headers.get("private-token") != READ_TOKEN:
            response = error(401)
        elif len(parts) == 2:
            q = request.query_params
            items = [p for p in reversed(state.pipelines) if p["ref"] == q.get("ref", p["ref"])]
            response = JSONResponse([shown(p) for p in items][: int(q.get("per_page", "20"))])
        elif (pipeline := find(parts[2])) is None:
            response = error(404)
        elif parts[3:] == ["variables"]:
            variables = pipeline["variables"]
            response = JSONResponse(
                [{"key": k, "variable_type": "env_var", "value": v} for k, v in variables.items()]
            )
        elif len(parts) == 3:
            response = JSONResponse(shown(pipeline))
            pipeline["phase"] += 1  # each read moves the pipeline one phase on
        else:
            response = error(404)
        await response(scope, receive, send)

    return state.faults.wrap(app)

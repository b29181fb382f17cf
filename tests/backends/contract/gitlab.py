"""A GitLab contract server: pipeline trigger, pipeline read, list, variables.

Modelled on GitLab's own source and docs (gitlabhq/gitlabhq); each rule names its
source where it is implemented:
- trigger: ``lib/api/ci/triggers.rb`` (``POST :id/trigger/pipeline``: ``requires :ref``
  (not blank), ``requires :token``, ``optional :variables`` (a map of strings); 201 with
  the pipeline) and ``app/services/ci/pipeline_trigger_service.rb``
  (``pipeline_service_response``: a pipeline that was not created is 400 with its
  errors as the message); https://docs.gitlab.com/api/pipeline_triggers/
- pipeline variables refused: ``doc/ci/variables/_index.md`` ("Restrict pipeline
  variables": ``no_one_allowed`` is the default for new projects in new namespaces on
  GitLab.com since 17.7) and the pipeline chain's error "Insufficient permissions to
  set pipeline variables";
- read, list (filters ``ref``, ``source``, ``created_after``, ``created_before``,
  ``order_by``, ``sort``, ``per_page``/``page``), variables: ``doc/api/pipelines.md``;
  pagination headers: ``doc/api/rest/_index.md`` (offset-based pagination);
- statuses: ``app/models/concerns/ci/has_status.rb`` (``AVAILABLE_STATUSES``) and
  ``app/models/commit_status.rb`` (``canceling`` ends as ``canceled``;
  ``waiting_for_callback`` ends as ``success`` or ``failed``);
- URL-encoded project path, PRIVATE-TOKEN header, status codes and the
  {"message": ...} error shape: https://docs.gitlab.com/api/rest/ and
  https://docs.gitlab.com/api/rest/troubleshooting/
- 429 with Retry-After: https://docs.gitlab.com/security/rate_limits/
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
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
# has_status.rb AVAILABLE_STATUSES, with canceling and waiting_for_callback (commit_status.rb)
STATUSES = (
    "created",
    "waiting_for_resource",
    "preparing",
    "waiting_for_callback",
    "pending",
    "running",
    "success",
    "failed",
    "canceling",
    "canceled",
    "skipped",
    "manual",
    "scheduled",
)
NO_VARIABLES = "Insufficient permissions to set pipeline variables"


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_iso(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


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
    phases: list[str] = field(default_factory=lambda: list(PHASES))
    # False models ci_pipeline_variables_minimum_override_role = no_one_allowed
    variables_allowed: bool = True
    pipelines: list[dict[str, Any]] = field(default_factory=list)
    faults: Faults = field(default_factory=lambda: Faults(error_body))

    def add_pipeline(self, ref: str = "main", source: str = "trigger", age: float = 0.0) -> int:
        """A pipeline started elsewhere (another trigger, a push), ``age`` seconds ago."""
        pipeline = {
            "id": 1000 + len(self.pipelines) + 1,
            "ref": ref,
            "phase": 0,
            "variables": {},
            "source": source,
            "created": time.time() - age,
        }
        self.pipelines.append(pipeline)
        return int(pipeline["id"])


def build_app(state: GitLabState, host: str = "gitlab.example.com") -> Any:
    def shown(p: dict[str, Any]) -> dict[str, Any]:
        status = state.phases[min(p["phase"], len(state.phases) - 1)] or state.final
        assert status in STATUSES, status
        return {
            "id": p["id"],
            "iid": p["id"] - 1000,
            "project_id": state.project_id,
            "sha": "a91957a8",
            "ref": p["ref"],
            "status": status,
            "source": p["source"],
            "created_at": iso(p["created"]),
            "updated_at": iso(p["created"]),
            "web_url": f"https://{host}/{state.project}/-/pipelines/{p['id']}",
        }

    async def trigger(request: Request) -> Response:
        if request.headers.get("content-type", "").split(";")[0] != FORM:
            return JSONResponse({"error": "ref is missing, token is missing"}, 400)
        pairs = parse_qsl((await request.body()).decode(), keep_blank_values=True)
        form = dict(pairs)
        ref = form.get("ref")
        # triggers.rb: requires :ref (allow_blank: false), :token; Grape's validation error
        # shape is {"error": "..."} with 400.
        if not ref or "token" not in form:
            missing = [name for name in ("ref", "token") if not form.get(name)]
            return JSONResponse({"error": ", ".join(f"{n} is missing" for n in missing)}, 400)
        if form["token"] != TRIGGER_TOKEN:
            return error(404)  # pipeline_trigger_service.rb: no trigger -> not_found!
        variables = {}
        for key, value in pairs:
            if key in ("token", "ref"):
                continue
            if not (key.startswith("variables[") and key.endswith("]")):
                return error(400, "variables needs to be a map of key-valued strings")
            variables[key[10:-1]] = value
        # Neither case creates a pipeline: pipeline_service_response answers 400 with the
        # pipeline's errors as the message.
        if ref not in state.branches:
            return error(400, {"base": ["Reference not found"]})
        if variables and not state.variables_allowed:
            return error(400, {"base": [NO_VARIABLES]})
        state.add_pipeline(ref)
        state.pipelines[-1]["variables"] = variables
        return JSONResponse(shown(state.pipelines[-1]), 201)

    def listed(q: Any) -> tuple[list[dict[str, Any]], dict[str, str]]:
        """doc/api/pipelines.md "List project pipelines": filters, order, offset pages."""
        items = [
            p
            for p in state.pipelines
            if q.get("ref", p["ref"]) == p["ref"]
            and q.get("source", p["source"]) == p["source"]
            and ("created_after" not in q or p["created"] > parse_iso(q["created_after"]))
            and ("created_before" not in q or p["created"] < parse_iso(q["created_before"]))
        ]
        items.sort(key=lambda p: int(p["id"]), reverse=q.get("sort", "desc") == "desc")
        per_page = min(int(q.get("per_page", "20")), 100)
        page = int(q.get("page", "1"))
        chunk = items[(page - 1) * per_page : page * per_page]
        headers = {"X-Page": str(page), "X-Per-Page": str(per_page), "X-Total": str(len(items))}
        headers["X-Next-Page"] = str(page + 1) if page * per_page < len(items) else ""
        return [shown(p) for p in chunk], headers

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
            items, headers = listed(request.query_params)
            response = JSONResponse(items, headers=headers)
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

"""A GitHub Actions REST contract server: workflow dispatch, run list, run read.

Shapes and rules come from these pages:
- dispatch: https://docs.github.com/en/rest/actions/workflows#create-a-workflow-dispatch-event
  (body {"ref", "inputs"}; 204 No Content, or 200 with workflow_run_id/run_url/html_url
  when "return_run_details": true — https://github.blog/changelog/2026-02-19-workflow-dispatch-api-now-returns-run-ids)
- list: https://docs.github.com/en/rest/actions/workflow-runs#list-workflow-runs-for-a-workflow
- read: https://docs.github.com/en/rest/actions/workflow-runs#get-a-workflow-run
- auth header: https://docs.github.com/en/rest/authentication/authenticating-to-the-rest-api
- errors ({"message", "documentation_url", "status"}):
  https://docs.github.com/en/rest/using-the-rest-api/troubleshooting-the-rest-api
- 429/403 with Retry-After: https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api
"""

from __future__ import annotations

import calendar
import json
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.backends.contract._server import Faults

TOKEN = "ghp_contractTOKEN0123456789abcdefSECRET"
DOCS = "https://docs.github.com/rest"
PHASES = [("queued", None), ("in_progress", None), ("completed", "")]


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"message": message, "documentation_url": DOCS, "status": str(status)}, status)


def error_body(status: int) -> tuple[bytes, str]:
    text = {
        401: "Bad credentials",
        403: "Resource not accessible by integration",
        404: "Not Found",
        429: "API rate limit exceeded",
    }.get(status, "Server Error")
    body = {"message": text, "documentation_url": DOCS, "status": str(status)}
    return json.dumps(body).encode(), "application/json"


@dataclass
class GitHubState:
    """What the fake GitHub holds; tests read and tune it."""

    owner: str = "acme"
    repo: str = "site"
    workflow: str = "deploy.yml"
    branches: set[str] = field(default_factory=lambda: {"main"})
    inputs: set[str] = field(default_factory=lambda: {"triggergate_id", "env"})
    run_details: bool = True  # False: a server that predates return_run_details
    list_delay: float = 0.2  # seconds before a new run is listed
    conclusion: str = "success"
    runs: list[dict[str, Any]] = field(default_factory=list)
    faults: Faults = field(default_factory=lambda: Faults(error_body))


def build_app(state: GitHubState) -> Any:
    base = f"/repos/{state.owner}/{state.repo}/actions"

    def check(request: Request) -> JSONResponse | None:
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return error(401, "Bad credentials")
        p = request.path_params
        if (p["owner"], p["repo"]) != (state.owner, state.repo):
            return error(404, "Not Found")
        if "workflow" in p and p["workflow"] != state.workflow:
            return error(404, "Not Found")
        return None

    def public(run: dict[str, Any], host: str) -> dict[str, Any]:
        phase, conclusion = PHASES[min(run["phase"], len(PHASES) - 1)]
        return {
            "id": run["id"],
            "name": "Deploy",
            "display_title": run["display_title"],
            "event": "workflow_dispatch",
            "status": phase,
            "conclusion": (conclusion or run["conclusion"]) if conclusion is not None else None,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(run["created"])),
            "url": f"{host}{base}/runs/{run['id']}",
            "html_url": f"https://github.com/{state.owner}/{state.repo}/actions/runs/{run['id']}",
        }

    async def dispatch(request: Request) -> Response:
        if (refused := check(request)) is not None:
            return refused
        try:
            body = await request.json()
        except ValueError:
            return error(400, "Problems parsing JSON")
        allowed = {"ref", "inputs"} | ({"return_run_details"} if state.run_details else set())
        extra = sorted(set(body) - allowed) if isinstance(body, dict) else []
        if not isinstance(body, dict) or extra:
            return error(422, f'Invalid request.\n\n"{extra[0] if extra else body}" is not a permitted key.')
        if not isinstance(body.get("ref"), str):
            return error(422, 'Invalid request.\n\n"ref" wasn\'t supplied.')
        if body["ref"] not in state.branches:
            return error(422, f"No ref found for: {body['ref']}")
        inputs = body.get("inputs") or {}
        if not isinstance(inputs, dict) or not all(isinstance(v, str) for v in inputs.values()):
            return error(422, "Invalid request.\n\nFor 'properties/inputs', is not an object.")
        if unexpected := sorted(set(inputs) - state.inputs):
            return error(422, f"Unexpected inputs provided: {json.dumps(unexpected)}")
        run = {
            "id": 30433642 + len(state.runs),
            "phase": 0,
            "conclusion": state.conclusion,
            # run-name: ${{ inputs.triggergate_id }} makes the display title the id.
            "display_title": inputs.get("triggergate_id", "Deploy"),
            "created": time.time(),
        }
        state.runs.append(run)
        if body.get("return_run_details") is True:
            shown = public(run, str(request.base_url).rstrip("/"))
            return JSONResponse(
                {
                    "workflow_run_id": run["id"],
                    "run_url": shown["url"],
                    "html_url": shown["html_url"],
                }
            )
        return Response(status_code=204)

    async def list_runs(request: Request) -> Response:
        if (refused := check(request)) is not None:
            return refused
        since = request.query_params.get("created", ">=1970-01-01T00:00:00Z")
        if not since.startswith(">="):
            return error(422, "Validation Failed")
        floor = calendar.timegm(time.strptime(since[2:], "%Y-%m-%dT%H:%M:%SZ"))
        per_page = min(int(request.query_params.get("per_page", "30")), 100)
        now = time.time()
        host = str(request.base_url).rstrip("/")
        runs = [
            public(r, host)
            for r in reversed(state.runs)
            if r["created"] + state.list_delay <= now and r["created"] >= floor
        ]
        return JSONResponse({"total_count": len(runs), "workflow_runs": runs[:per_page]})

    async def get_run(request: Request) -> Response:
        if (refused := check(request)) is not None:
            return refused
        for run in state.runs:
            if str(run["id"]) == request.path_params["run_id"]:
                shown = public(run, str(request.base_url).rstrip("/"))
                run["phase"] += 1  # each read moves the run one phase on
                return JSONResponse(shown)
        return error(404, "Not Found")

    app = Starlette(
        routes=[
            Route(
                "/repos/{owner}/{repo}/actions/workflows/{workflow}/dispatches",
                dispatch,
                methods=["POST"],
            ),
            Route(
                "/repos/{owner}/{repo}/actions/workflows/{workflow}/runs",
                list_runs,
                methods=["GET"],
            ),
            Route("/repos/{owner}/{repo}/actions/runs/{run_id}", get_run, methods=["GET"]),
        ]
    )
    return state.faults.wrap(app)

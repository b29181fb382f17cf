"""A GitHub Actions REST contract server: workflow dispatch, run list, run read.

Modelled on GitHub's OpenAPI description (github/rest-api-description,
``descriptions/api.github.com/api.github.com.2022-11-28.json``; "OpenAPI" below) and
GitHub's docs (github/docs); each rule names its source where it is implemented.

- dispatch: OpenAPI ``actions/create-workflow-dispatch``: body {"ref" (required),
  "inputs" (object, ``maxProperties: 25``), "return_run_details" (boolean)}; 204 when
  ``return_run_details`` is false or absent, 200 with workflow_run_id/run_url/html_url
  when it is true (servers that predate it refuse the key: ``run_details=False``);
- list: OpenAPI ``actions/list-workflow-runs`` (``event``, ``created``, ``per_page``
  max 100, ``page``, ``Link`` header; "up to 1,000 results for each search" with
  ``created``/``event``);
- read: OpenAPI ``actions/get-workflow-run``;
- auth header: https://docs.github.com/en/rest/authentication/authenticating-to-the-rest-api
- errors ({"message", "documentation_url", "status"}):
  https://docs.github.com/en/rest/using-the-rest-api/troubleshooting-the-rest-api
- rate limits: github/docs ``content/rest/using-the-rest-api/rate-limits-for-the-rest-api.md``
  ("Exceeding the rate limit"): :data:`SECONDARY_LIMIT` and :func:`primary_limit`.
"""

from __future__ import annotations

import calendar
import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.backends.contract._server import Fault, Faults

TOKEN = "ghp_contractTOKEN0123456789abcdefSECRET"
DOCS = "https://docs.github.com/rest"
PHASES = [("queued", None), ("in_progress", None), ("completed", "")]
MAX_INPUTS = 25  # OpenAPI actions/create-workflow-dispatch: inputs "maxProperties": 25
MAX_RESULTS = 1000  # OpenAPI actions/list-workflow-runs: "up to 1,000 results for each search"
RATE_DOCS = "https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api"

# A secondary rate limit: 403 "and an error message that indicates that you exceeded a
# secondary rate limit", possibly with neither retry-after nor x-ratelimit-remaining: 0
# ("Otherwise, wait for at least one minute before retrying"; rate-limits doc). The
# message is the one GitHub sends (as reported in app-sre/github-mirror#62).
SECONDARY_LIMIT = Fault(
    status=403,
    body=json.dumps(
        {
            "message": "You have exceeded a secondary rate limit. Please wait a few minutes "
            "before you try again.",
            "documentation_url": f"{RATE_DOCS}#about-secondary-rate-limits",
        }
    ),
)


def primary_limit(reset_in: int, method: str = "POST") -> Fault:
    """A primary rate limit: 403 with x-ratelimit-remaining 0 and x-ratelimit-reset (epoch
    seconds) "You should not retry your request until after" (rate-limits doc)."""
    return Fault(
        status=403,
        method=method,
        body=json.dumps({"message": "API rate limit exceeded", "documentation_url": RATE_DOCS}),
        headers={
            "x-ratelimit-limit": "5000",
            "x-ratelimit-remaining": "0",
            "x-ratelimit-reset": str(int(time.time()) + reset_in),
        },
    )


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
    dispatched: list[dict[str, Any]] = field(default_factory=list)  # accepted bodies

    def add_run(self, title: str, event: str = "workflow_dispatch", age: float = 0.0) -> None:
        """A run started elsewhere (another dispatch, a push), ``age`` seconds ago."""
        self.runs.append(
            {
                "id": 30433642 + len(self.runs),
                "phase": 0,
                "conclusion": self.conclusion,
                "display_title": title,
                "event": event,
                "created": time.time() - age,
            }
        )


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
            "event": run["event"],
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
        # OpenAPI: "required": ["ref"]; a schema violation is 422 "Invalid request".
        if not isinstance(body.get("ref"), str):
            return error(422, 'Invalid request.\n\n"ref" wasn\'t supplied.')
        if body["ref"] not in state.branches:
            return error(422, f"No ref found for: {body['ref']}")
        inputs = body.get("inputs") or {}
        if not isinstance(inputs, dict) or not all(isinstance(v, str) for v in inputs.values()):
            return error(422, "Invalid request.\n\nFor 'properties/inputs', is not an object.")
        if len(inputs) > MAX_INPUTS:  # OpenAPI: inputs "maxProperties": 25
            too_many = f"more than {MAX_INPUTS} properties"
            return error(422, f"Invalid request.\n\nFor 'properties/inputs', {too_many}.")
        # An input the workflow's on.workflow_dispatch.inputs does not declare is refused
        # (GitHub's answer for it; the description says inputs are "configured in the
        # workflow file").
        if unexpected := sorted(set(inputs) - state.inputs):
            return error(422, f"Unexpected inputs provided: {json.dumps(unexpected)}")
        state.dispatched.append(body)
        # run-name: ${{ inputs.triggergate_id }} makes the display title the id.
        state.add_run(inputs.get("triggergate_id", "Deploy"))
        run = state.runs[-1]
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
        q = request.query_params
        since = q.get("created", ">=1970-01-01T00:00:00Z")
        if not since.startswith(">="):
            return error(422, "Validation Failed")
        floor = calendar.timegm(time.strptime(since[2:], "%Y-%m-%dT%H:%M:%SZ"))
        per_page = min(int(q.get("per_page", "30")), 100)  # components/parameters/per-page
        page = int(q.get("page", "1"))
        now = time.time()
        host = str(request.base_url).rstrip("/")
        runs = [
            public(r, host)
            for r in reversed(state.runs)  # newest first
            if r["created"] + state.list_delay <= now
            and r["created"] >= floor
            and q.get("event", r["event"]) == r["event"]
        ][:MAX_RESULTS]
        shown = runs[(page - 1) * per_page : page * per_page]
        headers = {}
        if page * per_page < len(runs):  # components/headers/link: rel="next"
            following = urlencode({**q, "page": str(page + 1)})
            headers["Link"] = f'<{request.url.remove_query_params(list(q))}?{following}>; rel="next"'
        return JSONResponse({"total_count": len(runs), "workflow_runs": shown}, headers=headers)

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

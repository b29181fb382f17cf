"""Build-hook contract servers: a Buildkite-style builds API and a signed custom hook.

Shapes and rules come from these pages:
- Buildkite create/get build (Bearer token, JSON body with commit/branch/env/meta_data,
  201 + build with id/number/state/web_url; states scheduled/running/passed/failed/canceled):
  https://buildkite.com/docs/apis/rest-api/builds#create-a-build
  https://buildkite.com/docs/apis/rest-api/builds#get-a-build
- errors {"message": ...}: https://buildkite.com/docs/apis/rest-api#errors
- 429 + Retry-After: https://buildkite.com/docs/apis/rest-api/limits and RFC 9110 §10.2.3
- a Netlify-style build hook (POST, any body, optional trigger_title query, 200):
  https://docs.netlify.com/build/configure-builds/build-hooks/
- the signed hook's header follows GitHub's webhook signature
  (sha256=HMAC-SHA256 hex of the raw body):
  https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.backends.contract._server import Faults

TOKEN = "bkua_contractBUILDKITEtoken0123456789"
SECRET = "whsec_contractSIGNINGsecret0123456789"
PHASES = ["scheduled", "running", ""]  # "" is the final state
BUILDS = "/v2/organizations/acme/pipelines/site/builds"


def error_body(status: int) -> tuple[bytes, str]:
    return json.dumps({"message": f"HTTP {status}"}).encode(), "application/json"


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"message": message}, status)


@dataclass
class HookState:
    """What the fake build systems hold; tests read and tune it."""

    final: str = "passed"
    hook_status: int = 202
    builds: list[dict[str, Any]] = field(default_factory=list)
    hooks: list[dict[str, Any]] = field(default_factory=list)
    faults: Faults = field(default_factory=lambda: Faults(error_body))


def build_app(state: HookState) -> Any:
    def shown(build: dict[str, Any]) -> dict[str, Any]:
        phase = PHASES[min(build["phase"], len(PHASES) - 1)] or state.final
        return {
            "id": build["id"],
            "number": build["number"],
            "state": phase,
            "web_url": f"https://buildkite.com/acme/site/builds/{build['number']}",
            "url": f"https://api.buildkite.com{BUILDS}/{build['number']}",
        }

    async def create(request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return error(401, "Authentication required. Please supply a valid API Access Token")
        if request.headers.get("content-type") != "application/json":
            return error(422, "Validation Failed")
        try:
            body = json.loads(await request.body())
        except ValueError:
            return error(400, "Problems parsing JSON")
        if not isinstance(body, dict) or not all(isinstance(body.get(k), str) for k in ("commit", "branch")):
            return error(422, "Validation Failed: commit and branch are required")
        if not isinstance(body.get("env", {}), dict) or not isinstance(body.get("meta_data", {}), dict):
            return error(422, "Validation Failed: env and meta_data are objects")
        number = len(state.builds) + 1
        build = {
            "id": f"f62a1b4d-10f9-4790-bc1c-e2c3a0c8000{number}",
            "number": number,
            "phase": 0,
            "body": body,
            "idempotency_key": request.headers.get("idempotency-key"),
        }
        state.builds.append(build)
        return JSONResponse(shown(build), 201)

    async def get(request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return error(401, "Authentication required. Please supply a valid API Access Token")
        for build in state.builds:
            if str(build["number"]) == request.path_params["number"]:
                answer = shown(build)
                build["phase"] += 1  # each read moves the build one phase on
                return JSONResponse(answer)
        return error(404, "No build found")

    async def hook(request: Request) -> Response:
        body = await request.body()
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        given = request.headers.get("x-triggergate-signature-256", "")
        if not hmac.compare_digest(given, expected):
            return error(401, "bad signature")
        state.hooks.append(
            {
                "body": json.loads(body),
                "query": dict(request.query_params),
                "idempotency_key": request.headers.get("idempotency-key"),
            }
        )
        return Response(status_code=state.hook_status)

    app = Starlette(
        routes=[
            Route(BUILDS, create, methods=["POST"]),
            Route(BUILDS + "/{number}", get, methods=["GET"]),
            Route("/build_hooks/5c23354f454e1350f8543e78", hook, methods=["POST"]),
        ]
    )
    return state.faults.wrap(app)

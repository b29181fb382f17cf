"""A Jenkins contract server: buildWithParameters, crumbs, queue items, builds.

Modelled on Jenkins core (jenkinsci/jenkins) and its docs; each rule names its source
where it is implemented:
- ``buildWithParameters``: ``core/src/main/java/jenkins/model/ParameterizedJobMixIn.java``
  (``doBuildWithParameters``: 409 when the job is not buildable) and
  ``core/src/main/java/hudson/model/ParametersDefinitionProperty.java``
  (``buildWithParameters``: a value for each declared parameter, from the request or its
  default, others dropped; ``Queue.schedule2``; 201 + Location of a new queue item, 303 +
  Location of the existing item when the request was merged into it, 302 to the job
  when nothing was queued);
- merging: ``core/src/main/java/hudson/model/Queue.java`` (``scheduleInternal``: a
  waiting item whose ``ParametersAction`` has equal parameters takes the request) and
  ``ParametersAction.shouldSchedule``;
- remote access API (queue item executable, build JSON, ``tree``):
  https://www.jenkins.io/doc/book/using/remote-access-api/
- user + API token basic auth:
  https://www.jenkins.io/doc/book/system-administration/authenticating-scripted-clients/
- crumbs (GET /crumbIssuer/api/json, header + session cookie, 403 "No valid crumb"):
  https://www.jenkins.io/doc/book/security/csrf-protection/
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.types import Receive, Scope, Send

from tests.backends.contract._server import Faults

USER = "deploy-bot"
TOKEN = "11contractJENKINSapitoken0123456789ab"
CRUMB = "4f1c0e9d8b7a6c5d4e3f2a1b0c9d8e7f"
SESSION = "node0contractsession"
FORM = "application/x-www-form-urlencoded"
PATH = re.compile(r"^(?P<job>(?:/job/[^/]+)+)(?P<rest>/.*)?$")


def error_body(status: int) -> tuple[bytes, str]:
    return f"<html><body><h2>HTTP ERROR {status}</h2></body></html>".encode(), "text/html"


@dataclass
class JenkinsState:
    """What the fake Jenkins holds; tests read and tune it."""

    job: str = "/job/web/job/deploy"
    # declared parameters and their defaults (StringParameterDefinition)
    params: dict[str, str] = field(default_factory=lambda: {"ENV": "staging", "TRIGGERGATE_ID": ""})
    buildable: bool = True  # False: a disabled job
    veto: bool = False  # True: a QueueDecisionHandler refuses every schedule
    crumb_required: bool = False
    forget_queue: bool = False  # queue items vanish once they have a build
    result: str = "SUCCESS"
    queue: list[dict[str, Any]] = field(default_factory=list)  # every item ever queued
    builds: list[dict[str, Any]] = field(default_factory=list)
    faults: Faults = field(default_factory=lambda: Faults(error_body))


def build_app(state: JenkinsState) -> Any:
    expected = "Basic " + base64.b64encode(f"{USER}:{TOKEN}".encode()).decode()

    def actions(params: dict[str, str]) -> list[dict[str, Any]]:
        return [
            {
                "_class": "hudson.model.ParametersAction",
                "parameters": [{"name": k, "value": v} for k, v in params.items()],
            }
        ]

    def build_json(b: dict[str, Any], host: str) -> dict[str, Any]:
        done = b["reads"] >= 1
        return {
            "_class": "org.jenkinsci.plugins.workflow.job.WorkflowRun",
            "number": b["number"],
            "url": f"{host}{state.job}/{b['number']}/",
            "queueId": b["queue_id"],
            "building": not done,
            "result": state.result if done else None,
            "actions": actions(b["params"]),
        }

    def item_json(item: dict[str, Any], host: str) -> dict[str, Any]:
        base = {
            "id": item["id"],
            "task": {"url": f"{host}{state.job}/"},
            "actions": actions(item["params"]),
            "cancelled": False,
        }
        if item["build"] is None:
            return {
                **base,
                "_class": "hudson.model.Queue$WaitingItem",
                "why": "Waiting for next available executor",
                "executable": None,
            }
        return {
            **base,
            "_class": "hudson.model.Queue$LeftItem",
            "why": None,
            "executable": {"number": item["build"], "url": f"{host}{state.job}/{item['build']}/"},
        }

    def advance(item: dict[str, Any]) -> None:
        item["reads"] += 1
        if item["build"] is None and item["reads"] >= 2:
            number = len(state.builds) + 1
            state.builds.append(
                {"number": number, "queue_id": item["id"], "params": item["params"], "reads": 0}
            )
            item["build"] = number

    async def build_with_parameters(request: Request, host: str) -> Response:
        if state.crumb_required and (
            request.headers.get("jenkins-crumb") != CRUMB or request.cookies.get("JSESSIONID") != SESSION
        ):
            return HTMLResponse(
                "<html><body>HTTP ERROR 403 No valid crumb was included in the request</body></html>",
                403,
            )
        if request.headers.get("content-type", "").split(";")[0] != FORM:
            return HTMLResponse("<html><body>HTTP ERROR 400</body></html>", 400)
        if not state.buildable:  # ParameterizedJobMixIn: SC_CONFLICT "... is not buildable"
            return HTMLResponse(f"<html>{state.job} is not buildable</html>", 409)
        given = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        # One value per declared parameter, from the request or the default; the rest dropped.
        params = {name: given.get(name, default) for name, default in state.params.items()}
        if state.veto:  # schedule2 -> ScheduleResult.refused(): no item, sendRedirect(".")
            return Response(status_code=302, headers={"Location": f"{host}{state.job}/"})
        for item in state.queue:
            # scheduleInternal: a waiting item with equal parameters takes the request,
            # ScheduleResult.existing -> 303 See Other to that item.
            if item["build"] is None and item["params"] == params:
                return Response(status_code=303, headers={"Location": f"{host}/queue/item/{item['id']}/"})
        item = {"id": 401 + len(state.queue), "params": params, "build": None, "reads": 0}
        state.queue.append(item)
        # ScheduleResult.created -> 201 Created with the new item's URL.
        return Response(status_code=201, headers={"Location": f"{host}/queue/item/{item['id']}/"})

    async def route(request: Request, host: str) -> Response:
        path, method = request.url.path, request.method
        if path == "/crumbIssuer/api/json" and method == "GET":
            response = JSONResponse(
                {
                    "_class": "hudson.security.csrf.DefaultCrumbIssuer",
                    "crumb": CRUMB,
                    "crumbRequestField": "Jenkins-Crumb",
                }
            )
            response.set_cookie("JSESSIONID", SESSION, httponly=True)
            return response
        if path == "/queue/api/json" and method == "GET":
            waiting = [item_json(i, host) for i in state.queue if i["build"] is None]
            return JSONResponse({"_class": "hudson.model.Queue", "items": waiting})
        if (m := re.fullmatch(r"/queue/item/(\d+)/api/json", path)) and method == "GET":
            item = next((i for i in state.queue if str(i["id"]) == m.group(1)), None)
            if item is None or (state.forget_queue and item["build"] is not None):
                return HTMLResponse("<html>Not Found</html>", 404)
            shown = item_json(item, host)
            advance(item)
            return JSONResponse(shown)
        m = PATH.match(path)
        if m is None or m.group("job") != state.job:
            return HTMLResponse("<html>Not Found</html>", 404)
        rest = m.group("rest") or "/"
        if rest == "/buildWithParameters" and method == "POST":
            return await build_with_parameters(request, host)
        if rest == "/api/json" and method == "GET":
            builds = [build_json(b, host) for b in reversed(state.builds)]
            return JSONResponse({"_class": "WorkflowJob", "builds": builds})
        if (b := re.fullmatch(r"/(\d+)/api/json", rest)) and method == "GET":
            build = next((x for x in state.builds if str(x["number"]) == b.group(1)), None)
            if build is None:
                return HTMLResponse("<html>Not Found</html>", 404)
            shown = build_json(build, host)
            build["reads"] += 1
            return JSONResponse(shown)
        return HTMLResponse("<html>Not Found</html>", 404)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        host = str(request.base_url).rstrip("/")
        if request.headers.get("authorization") != expected:
            response: Response = HTMLResponse("<html>Invalid password/token for user</html>", 401)
        else:
            response = await route(request, host)
        await response(scope, receive, send)

    return state.faults.wrap(app)

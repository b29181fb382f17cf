"""Any HTTP build hook: ``webhook+https://host/path?method=POST&ok=200,201,202,204``.

For Netlify/Vercel-style build hooks, Buildkite, or a home-made endpoint.
Options in the URL (removed before the call; other query keys stay):

- ``method`` (POST), ``ok`` (status codes that mean "started"; others are
  refusals, or retried/uncertain as in :mod:`triggergate.backends._http`);
- ``ref_field`` / ``url_field``: dotted JSON fields of the answer holding the
  run's id and URL (the ref is the request id otherwise);
- ``signature_header`` (``X-Triggergate-Signature-256``): when
  ``TRIGGERGATE_PIPELINE_WEBHOOK_SECRET`` is set, the header carries
  ``sha256=<hex HMAC-SHA256 of the exact body>``, GitHub-webhook style;
- ``status_url`` (with ``{ref}``) and ``state_field`` (``status``): without
  a status URL every status is ``unknown`` — a generic hook has no read API.

``TRIGGERGATE_PIPELINE_WEBHOOK_TOKEN``, when set, is sent as a Bearer token.
Every start carries ``Idempotency-Key: <request id>``, but a start that may have
reached the hook is never sent again (a 5xx or a lost answer is uncertain), and
``find()`` cannot look runs up, so an uncertain start counts as not started.

The body is ``ctx.options["body_template"]`` (a JSON value or its text) or
``{"request_id": "${request_id}", "ref": "${ref}", "params": "${params}"}``: the ref
(what to build, empty when the request named none) is never one of the params. In string leaves
``${request_id}``, ``${ref}``, ``${client}`` and ``${params.NAME}`` are
replaced; a leaf that is exactly ``"${params}"`` becomes the params object.
Substitution works on the parsed value, so no parameter can break the JSON.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from triggergate.backends._http import HttpClient, RetryPolicy, json_object
from triggergate.backends.base import Backend, RunState, Started, StartRequest, Status
from triggergate.errors import ConfigurationError
from triggergate.registry import Context
from triggergate.singleflight import SingleFlight

NAME = "webhook"
OPTIONS = {
    "method",
    "ok",
    "ref_field",
    "url_field",
    "signature_header",
    "status_url",
    "state_field",
}
DEFAULT_TEMPLATE = {"request_id": "${request_id}", "ref": "${ref}", "params": "${params}"}
PLACEHOLDER = re.compile(r"\$\{(request_id|ref|client|params\.[A-Za-z0-9_.-]+)\}")
WORDS: dict[str, RunState] = {
    **dict.fromkeys(("queued", "pending", "waiting", "created", "scheduled", "enqueued"), "queued"),
    **dict.fromkeys(("running", "in_progress", "building", "started"), "running"),
    **dict.fromkeys(("succeeded", "success", "passed", "ready", "done", "completed"), "succeeded"),
    **dict.fromkeys(("failed", "failure", "error", "errored", "timed_out"), "failed"),
    **dict.fromkeys(("cancelled", "canceled", "aborted"), "cancelled"),
    **dict.fromkeys(("superseded", "skipped"), "superseded"),
}


def render(template: Any, request: StartRequest) -> Any:
    """The template with placeholders filled from ``request`` (see the module doc)."""
    if isinstance(template, dict):
        return {key: render(value, request) for key, value in template.items()}
    if isinstance(template, list):
        return [render(value, request) for value in template]
    if template == "${params}":
        return dict(request.params)
    if not isinstance(template, str):
        return template
    values = {"request_id": request.request_id, "ref": request.ref or "", "client": request.client}

    def fill(match: re.Match[str]) -> str:
        name = match[1]
        if name.startswith("params."):
            return request.params.get(name.removeprefix("params."), "")
        return values[name]

    return PLACEHOLDER.sub(fill, template)


def dig(doc: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        doc = doc.get(part) if isinstance(doc, dict) else None
    return doc


class WebhookBackend(Backend):
    """Starts a run by calling one HTTP hook."""

    name = "webhook"

    def __init__(self, ctx: Context, target: str, options: dict[str, str]) -> None:
        self.ctx = ctx
        self.target = target
        self.method = options.get("method", "POST").upper()
        try:
            self.ok = frozenset(int(c) for c in options.get("ok", "200,201,202,204").split(","))
        except ValueError as exc:
            raise ConfigurationError("pipeline: ok= takes status codes like 200,202", key="pipeline") from exc
        self.ref_field = options.get("ref_field", "")
        self.url_field = options.get("url_field", "")
        self.signature_header = options.get("signature_header", "X-Triggergate-Signature-256")
        self.status_url = options.get("status_url", "")
        self.state_field = options.get("state_field", "status")
        template = ctx.options.get("body_template", DEFAULT_TEMPLATE)
        try:
            self.template = json.loads(template) if isinstance(template, str) else template
        except ValueError as exc:
            raise ConfigurationError("body_template is not JSON", key="body_template") from exc
        self.http = HttpClient(NAME, RetryPolicy.from_options(ctx.options))
        self._flight: SingleFlight[Started] = SingleFlight(remember=1024)

    @classmethod
    def from_url(cls, url: str, ctx: Context) -> WebhookBackend:
        parts = urlsplit(url)
        scheme = parts.scheme.partition("+")[2]
        if scheme not in ("https", "http") or not parts.netloc:
            raise ConfigurationError(
                "pipeline: expected webhook+https://HOST/PATH?method=POST&ok=200,202",
                key="pipeline",
            )
        query = parse_qsl(parts.query, keep_blank_values=True)
        options = {k: v for k, v in query if k in OPTIONS}
        rest = urlencode([(k, v) for k, v in query if k not in OPTIONS])
        target = urlunsplit((scheme, parts.netloc, parts.path, rest, ""))
        return cls(ctx, target, options)

    def _headers(self) -> dict[str, str]:
        token = self.ctx.secret("PIPELINE_WEBHOOK_TOKEN")
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def start(self, request: StartRequest) -> Started:
        return await self._flight.run(request.request_id, lambda: self._start(request))

    async def _start(self, request: StartRequest) -> Started:
        body = json.dumps(render(self.template, request), separators=(",", ":")).encode()
        headers = {
            **self._headers(),
            "Content-Type": "application/json",
            "Idempotency-Key": request.request_id,
        }
        secret = self.ctx.secret("PIPELINE_WEBHOOK_SECRET")
        if secret:
            digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
            headers[self.signature_header] = f"sha256={digest}"
        response = await self.http.send(
            self.method,
            self.target,
            "build hook",
            idempotent=False,
            ok=self.ok,
            content=body,
            headers=headers,
        )
        ref, url = request.request_id, None
        if self.ref_field or self.url_field:
            answer = json_object(response, NAME, "build hook")
            ref = str(dig(answer, self.ref_field) or ref) if self.ref_field else ref
            found = dig(answer, self.url_field) if self.url_field else None
            url = found if isinstance(found, str) else None
        return Started(ref, url)

    async def status(self, ref: str) -> Status:
        if not self.status_url:
            return Status("unknown", detail="this webhook has no status URL")
        response = await self.http.send(
            "GET",
            self.status_url.replace("{ref}", quote(ref, safe="")),
            "status read",
            idempotent=True,
            ok=frozenset({200}),
            headers=self._headers(),
        )
        answer = json_object(response, NAME, "status read")
        state = WORDS.get(str(dig(answer, self.state_field)).lower(), "unknown")
        url = dig(answer, self.url_field) if self.url_field else None
        return Status(state, url if isinstance(url, str) else None)

    async def close(self) -> None:
        await self.http.close()

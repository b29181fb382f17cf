"""Webhook backend against the build-hook contract servers in tests/backends/contract/webhook.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from tests.backends.conftest import assert_secret_absent, context
from tests.backends.contract._server import Fault, serve
from tests.backends.contract.webhook import BUILDS, SECRET, TOKEN, HookState, build_app
from triggergate.backends.base import StartRequest
from triggergate.backends.webhook import WebhookBackend, render
from triggergate.errors import BackendRefused, BackendUncertain, ConfigurationError
from triggergate.registry import backend_from_url

BUILDKITE_BODY = {
    "commit": "HEAD",
    "branch": "main",
    "message": "triggergate ${request_id}",
    "env": "${params}",
    "meta_data": {"triggergate_id": "${request_id}"},
}
HOOK = "/build_hooks/5c23354f454e1350f8543e78"


@pytest.fixture
def hooks() -> Iterator[tuple[HookState, str]]:
    state = HookState()
    with serve(build_app(state)) as url:
        yield state, url.removeprefix("http://")


def buildkite(host: str, token: str = TOKEN) -> WebhookBackend:
    status_url = quote(f"http://{host}{BUILDS}/{{ref}}", safe="")
    backend = backend_from_url(
        f"webhook+http://{host}{BUILDS}?ok=201&ref_field=number&url_field=web_url"
        f"&state_field=state&status_url={status_url}",
        context({"PIPELINE_WEBHOOK_TOKEN": token}, body_template=BUILDKITE_BODY),
    )
    assert isinstance(backend, WebhookBackend)
    return backend


def signed(host: str, secret: str | None = SECRET, ok: str = "200,202") -> WebhookBackend:
    secrets = {"PIPELINE_WEBHOOK_SECRET": secret} if secret else {}
    backend = backend_from_url(f"webhook+http://{host}{HOOK}?trigger_title=deploy&ok={ok}", context(secrets))
    assert isinstance(backend, WebhookBackend)
    return backend


def req(rid: str = "req-1", **params: str) -> StartRequest:
    return StartRequest(request_id=rid, client="198.51.100.7", params=params)


async def test_buildkite_style_start_reads_ref_url_and_status_progression(
    hooks: tuple[HookState, str],
) -> None:
    """ref_field/url_field come from the answer; status_url reads scheduled -> running -> passed."""
    backend = buildkite(hooks[1])
    try:
        started = await backend.start(req(ENV="prod"))
        seen = [await backend.status(started.ref) for _ in range(3)]
    finally:
        await backend.close()
    build = hooks[0].builds[0]
    assert started.ref == "1"
    assert started.url == "https://buildkite.com/acme/site/builds/1"
    assert build["body"]["env"] == {"ENV": "prod"}
    assert build["body"]["meta_data"] == {"triggergate_id": "req-1"}
    assert build["idempotency_key"] == "req-1"
    assert [s.state for s in seen] == ["queued", "running", "succeeded"]


async def test_signed_hook_gets_a_valid_signature_and_keeps_its_own_query(
    hooks: tuple[HookState, str],
) -> None:
    """The HMAC header verifies on the server; trigger_title stays, backend options do not; status
    is unknown.
    """
    backend = signed(hooks[1])
    try:
        started = await backend.start(req(ENV="prod"))
        status = await backend.status(started.ref)
    finally:
        await backend.close()
    hook = hooks[0].hooks[0]
    assert hook["body"] == {"request_id": "req-1", "ref": "", "params": {"ENV": "prod"}}
    assert hook["query"] == {"trigger_title": "deploy"}
    assert started.ref == "req-1"
    assert status.state == "unknown"


async def test_unsigned_or_wrongly_signed_start_is_refused(hooks: tuple[HookState, str]) -> None:
    """Without the right secret the hook answers 401, a definite refusal; nothing starts."""
    for backend in (signed(hooks[1], secret=None), signed(hooks[1], secret="whsec_other")):
        try:
            with pytest.raises(BackendRefused, match="HTTP 401"):
                await backend.start(req())
        finally:
            await backend.close()
    assert hooks[0].hooks == []


async def test_a_status_code_outside_ok_is_a_refusal(hooks: tuple[HookState, str]) -> None:
    """With ok=202 only, a 200 answer is a refusal that names the status."""
    hooks[0].hook_status = 200
    backend = signed(hooks[1], ok="202")
    try:
        with pytest.raises(BackendRefused, match="HTTP 200"):
            await backend.start(req())
    finally:
        await backend.close()


async def test_a_503_is_uncertain_and_never_resent(hooks: tuple[HookState, str]) -> None:
    """A 503 may come after the hook started the build: BackendUncertain after one POST."""
    hooks[0].faults.inject(Fault(after="error", status=503))
    backend = buildkite(hooks[1])
    try:
        with pytest.raises(BackendUncertain):
            await backend.start(req())
    finally:
        await backend.close()
    assert hooks[0].faults.count("POST") == 1
    assert len(hooks[0].builds) == 1


async def test_429_refuses_the_start_and_the_next_start_waits_it_out(hooks: tuple[HookState, str]) -> None:
    """A 429 with Retry-After: 1: refused with that wait, not resent; the next start is sent
    after the second has passed."""
    hooks[0].faults.inject(Fault(status=429, retry_after="1"))
    backend = signed(hooks[1])
    try:
        with pytest.raises(BackendRefused) as info:
            await backend.start(req("req-a"))
        begin = time.monotonic()
        await backend.start(req("req-b"))
    finally:
        await backend.close()
    assert not info.value.misconfigured and info.value.retry_after == 1
    assert time.monotonic() - begin >= 0.9
    assert len(hooks[0].hooks) == 1


@pytest.mark.parametrize("after", ["drop", "hang"])
async def test_ambiguous_start_is_uncertain_and_find_cannot_look_it_up(
    hooks: tuple[HookState, str], after: str
) -> None:
    """Accepted-then-lost: BackendUncertain with no retry; a generic hook has no lookup, find() is
    None.
    """
    hooks[0].faults.inject(Fault(after=after, seconds=1.5))
    backend = buildkite(hooks[1])
    try:
        with pytest.raises(BackendUncertain):
            await backend.start(req("req-amb"))
        assert await backend.find("req-amb") is None
    finally:
        await backend.close()
    assert len(hooks[0].builds) == 1


async def test_ten_racing_starts_with_one_request_id_start_one_build(
    hooks: tuple[HookState, str],
) -> None:
    """Ten concurrent start() calls with one request id share one call and one build."""
    backend = buildkite(hooks[1])
    try:
        results = await asyncio.gather(*(backend.start(req("req-race")) for _ in range(10)))
    finally:
        await backend.close()
    assert len(hooks[0].builds) == 1
    assert {r.ref for r in results} == {"1"}


def test_template_substitutes_inside_strings_without_breaking_json() -> None:
    """Placeholders fill string leaves; a hostile parameter stays a plain string value."""
    template = {"t": "run ${request_id} on ${ref} for ${params.ENV}", "p": "${params}", "n": 3}
    request = StartRequest("r1", "c", {"ENV": '"}, "x": {'}, ref="main")
    assert render(template, request) == {
        "t": 'run r1 on main for "}, "x": {',
        "p": {"ENV": '"}, "x": {'},
        "n": 3,
    }


def test_bad_ok_codes_are_a_configuration_error() -> None:
    """ok= with something that is not a status code fails at configuration time."""
    with pytest.raises(ConfigurationError):
        backend_from_url("webhook+https://example.invalid/h?ok=two", context({}))


async def test_secrets_absent_from_errors_logs_and_results(
    hooks: tuple[HookState, str], all_logs: pytest.LogCaptureFixture
) -> None:
    """The Bearer token and the signing secret appear in no exception text, log line or result."""
    wrong = "bkua_wrongTOKENwhichMustNotLeak01234567"
    bad, good, hook = buildkite(hooks[1], token=wrong), buildkite(hooks[1]), signed(hooks[1])
    try:
        with pytest.raises(BackendRefused) as info:
            await bad.start(req())
        started = await good.start(req("req-ok"))
        status = await good.status(started.ref)
        hooked = await hook.start(req("req-hook"))
    finally:
        for backend in (bad, good, hook):
            await backend.close()
    assert all_logs.records
    for secret in (wrong, TOKEN, SECRET):
        assert_secret_absent(secret, info.value, info.value.__cause__, all_logs.text, started, status, hooked)


async def test_the_default_body_carries_the_ref_beside_the_params(hooks: tuple[HookState, str]) -> None:
    """The ref is the body's own "ref" field, never one of the params."""
    backend = signed(hooks[1])
    try:
        await backend.start(StartRequest("req-ref", "198.51.100.7", {"ENV": "qa"}, ref="release"))
    finally:
        await backend.close()
    assert hooks[0].hooks[0]["body"] == {"request_id": "req-ref", "ref": "release", "params": {"ENV": "qa"}}

"""The page and the operator view in a real browser (Debian's chromium, headless) against a
real ``triggergate serve`` process with the demo configuration."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page, Playwright, expect, sync_playwright

from tests.servers._process import require_binary
from tests.servers.app import AppServer, start_app
from tests.servers.webhook import WebhookServer, webhook_server

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ZONE = "America/New_York"
ADMIN_TOKEN = "9YSiR6wFk1PTpnDfidpCpnILZj_-4PGzaeHn398dc3U"
WEEK = 7 * 86400
ELAPSED = re.compile(r"^0:0[0-9]$")


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as pw:
        yield pw


@pytest.fixture
def browser(playwright: Playwright, tmp_path: Path) -> Iterator[Callable[..., BrowserContext]]:
    """Open a chromium context with a fresh profile; ``js=False`` turns JavaScript off."""
    contexts: list[BrowserContext] = []

    def open_context(js: bool = True) -> BrowserContext:
        profile = tmp_path / f"profile-{len(contexts)}"
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=require_binary("chromium"),
            args=ARGS,
            headless=True,
            java_script_enabled=js,
            timezone_id=ZONE,
            locale="en-US",
            viewport={"width": 900, "height": 900},
        )
        contexts.append(context)
        return context

    yield open_context
    for context in contexts:
        context.close()


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    pipeline = f"command://{ROOT}/examples/demo-pipeline?arg=--stage-seconds=0.3"
    return {
        "TRIGGERGATE_CONFIG": str(ROOT / "examples" / "demo.toml"),
        "TRIGGERGATE_STORE": f"sqlite:///{tmp_path}/gate.db",
        "TRIGGERGATE_PIPELINE": pipeline,
        "TRIGGERGATE_STATE_DIR": str(tmp_path / "state"),
        "TRIGGERGATE_COALESCE": "false",
        "TRIGGERGATE_LIMITS": "3/7d",
        **extra,
    }


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., AppServer]]:
    """Start the demo server with extra TRIGGERGATE_* settings; stopped by PID afterwards."""
    servers: list[AppServer] = []

    def start(**extra: str) -> AppServer:
        server = start_app(tmp_path, _env(tmp_path, **extra))
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def _cli(tmp_path: Path, *args: str) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TRIGGERGATE_")}
    subprocess.run(
        [sys.executable, "-m", "triggergate", *args],
        cwd=tmp_path,
        env={**clean, **_env(tmp_path)},
        check=True,
        capture_output=True,
        timeout=60,
    )


def _local(iso: str) -> datetime:
    return datetime.fromisoformat(iso).astimezone(ZoneInfo(ZONE))


def _shown_in_local_time(text: str, at: datetime) -> bool:
    """The text names ``at`` in the viewer's zone (en-US), not in UTC."""
    return (
        f"{at:%b} {at.day}, {at.year}" in text
        and f"{at.hour % 12 or 12}:{at:%M}" in text
        and ("EST" in text or "EDT" in text)
    )


def test_three_runs_succeed_then_the_quota_message_names_the_local_retry_time(
    serve: Callable[..., AppServer], browser: Callable[..., BrowserContext]
) -> None:
    """Three presses show three runs progressing to succeeded; the fourth press says the
    quota is spent and when to try again, in the viewer's local time."""
    server = serve()
    page = browser().new_page()
    page.goto(server.url)
    expect(page.locator("h1")).to_have_text("Deploy the demo")
    expect(page.locator("#pipeline")).to_have_text("demo-pipeline")
    expect(page.locator("#quota")).to_contain_text("You can press 3 more times")
    runs = page.locator("li.run")
    for count in (1, 2, 3):
        if count == 1:  # the keyboard alone can press the button
            page.get_by_role("button", name="Deploy").focus()
            page.keyboard.press("Enter")
        else:
            page.get_by_role("button", name="Deploy").click()
        expect(runs).to_have_count(count)
        expect(page.locator("#message")).to_contain_text("Your run has started")
        if count == 1:  # the first run is seen before it ends
            assert runs.first.get_attribute("data-state") in ("queued", "running")
    expect(page.locator('li.run[data-state="succeeded"]')).to_have_count(3, timeout=20_000)
    expect(runs.first.locator(".elapsed")).to_have_text(ELAPSED)
    expect(page.locator("li.run a")).to_have_count(0)  # the demo pipeline has no CI page
    expect(page.locator("#quota")).to_contain_text("You have used all your triggers")
    if os.environ.get("TRIGGERGATE_UPDATE_SCREENSHOT") == "1":
        page.set_viewport_size({"width": 900, "height": 660})
        page.screenshot(path=str(ROOT / "docs" / "screenshot.png"), full_page=True)

    page.get_by_role("button", name="Deploy").click()
    message = page.locator("#message")
    expect(message).to_contain_text("You have used all your triggers")
    stamp = message.locator("time").get_attribute("datetime")
    assert stamp is not None
    retry_at = datetime.fromisoformat(stamp)
    assert abs(retry_at.timestamp() - (time.time() + WEEK)) < 120
    assert _shown_in_local_time(message.inner_text(), _local(stamp))
    expect(runs).to_have_count(3)


def test_the_page_shows_the_operators_kill_switch_reason(
    tmp_path: Path, serve: Callable[..., AppServer], browser: Callable[..., BrowserContext]
) -> None:
    """With the kill switch on (CLI), the page and a press show the operator's reason;
    once off, a press starts a run again."""
    server = serve()
    _cli(tmp_path, "kill-switch", "on", "--reason", "Maintenance until 14:00 UTC")
    page = browser().new_page()
    page.goto(server.url)
    expect(page.locator("#paused")).to_contain_text("Maintenance until 14:00 UTC")
    page.get_by_role("button", name="Deploy").click()
    expect(page.locator("#message")).to_have_text(
        "Triggers are paused by the operator: Maintenance until 14:00 UTC"
    )
    expect(page.locator("li.run")).to_have_count(0)
    _cli(tmp_path, "kill-switch", "off")
    time.sleep(1.1)  # each replica reads the switch at most once a second
    page.get_by_role("button", name="Deploy").click()
    expect(page.locator("#message")).to_contain_text("Your run has started")
    expect(page.locator("#paused")).to_have_count(0)


def test_without_javascript_the_form_posts_and_shows_a_result_page(
    tmp_path: Path, serve: Callable[..., AppServer], browser: Callable[..., BrowserContext]
) -> None:
    """JavaScript off: the quota shows in UTC, an allow-listed choice is a <select>, the form
    POST answers with a result page and a link back, and the pipeline gets the value."""
    params = '{"branch": {"choices": ["main", "release"], "default": "main", "label": "Branch"}}'
    server = serve(TRIGGERGATE_PARAMS=params)
    page = browser(js=False).new_page()
    page.goto(server.url)
    expect(page.locator("#quota")).to_contain_text("You can press 3 more times")
    page.get_by_label("Branch").select_option("release")
    page.get_by_role("button", name="Deploy").click()
    expect(page.locator("h1")).to_have_text("Your run has started")
    run_id = page.locator(".result code").inner_text()
    log = tmp_path / "state" / "runs" / run_id / "output.log"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and "BRANCH=release" not in _read(log):
        time.sleep(0.1)
    assert "param BRANCH=release" in _read(log)
    page.get_by_role("link", name="Back to Deploy the demo").click()
    expect(page.locator("#quota")).to_contain_text("You can press 2 more times")
    expect(page.locator("#quota time")).to_contain_text("UTC")


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def _wait(check: Callable[[], Any], seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def test_the_admin_view_refuses_without_the_token_and_works_with_it(
    serve: Callable[..., AppServer], browser: Callable[..., BrowserContext]
) -> None:
    """/admin answers 401 with a sign-in form; signed in, the operator sees the accepted
    trigger, toggles the kill switch (CSRF-bound forms) and retries a dead letter."""
    with webhook_server() as hook:
        hook.always_fail_paths.add("/hook")
        server = serve(
            TRIGGERGATE_ADMIN_TOKEN=ADMIN_TOKEN,
            TRIGGERGATE_NOTIFY=f"log://,webhook+{hook.url}/hook",
            TRIGGERGATE_OUTBOX_ATTEMPTS="1",
        )
        _admin_session(server, hook, browser())


def _submit(page: Page, button: str) -> None:
    """Press a form's button and wait for the page the POST redirects to."""
    with page.expect_navigation():
        page.get_by_role("button", name=button).click()


def _admin_session(server: AppServer, hook: WebhookServer, context: BrowserContext) -> None:
    assert httpx.get(f"{server.url}/admin", headers={"Authorization": "Bearer nope"}).status_code == 401
    page = context.new_page()
    refused = page.goto(f"{server.url}/admin")
    assert refused is not None and refused.status == 401
    expect(page.get_by_label("Admin token")).to_be_visible()
    page.get_by_label("Admin token").fill("wrong-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("not right")

    public = context.new_page()
    public.goto(server.url)
    public.get_by_role("button", name="Deploy").click()
    expect(public.locator("li.run")).to_have_count(1)
    run_id = public.locator("li.run").get_attribute("data-run-id")
    _wait(lambda: len(hook.rejected) >= 1)  # the alert failed once: now a dead letter

    page.get_by_label("Admin token").fill(ADMIN_TOKEN)
    _submit(page, "Sign in")
    expect(page.locator("h1")).to_have_text("Operator view")
    expect(page.locator("table").first).to_contain_text(str(run_id))
    expect(page.locator("table").first).to_contain_text("accepted")

    page.get_by_label("Reason shown to visitors").fill("Operator pause for the browser test")
    _submit(page, "Pause triggers")
    expect(page.locator("#kill-state")).to_contain_text("Operator pause for the browser test")
    public.reload()
    expect(public.locator("#paused")).to_contain_text("Operator pause for the browser test")
    _submit(page, "Resume triggers")
    expect(page.locator("#kill-state")).to_contain_text("Off")

    page.reload()
    expect(page.get_by_role("button", name="Retry all")).to_be_visible()
    dead_id = page.locator("input[name='item']").first.get_attribute("value")
    hook.always_fail_paths.clear()
    _submit(page, f"Retry {dead_id}")
    _wait(lambda: len(hook.received) >= 1)
    assert hook.received[0].json()["event"] == "accepted"
    page.reload()
    expect(page.get_by_text("No dead letters.")).to_be_visible()
    actions = page.locator("table").filter(has_text="kill_switch_on")
    for action in ("login", "kill_switch_on", "kill_switch_off", "dlq_retry"):
        expect(actions).to_contain_text(action)

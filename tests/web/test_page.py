"""The public page and the no-JavaScript form path, through the real app (no browser)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from tests.servers.app import free_port
from tests.web.conftest import MakeClient
from triggergate.models import Outcome
from triggergate.web.page import prefers_html
from triggergate.web.result import result_text

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
FORM = {"content-type": "application/x-www-form-urlencoded", "accept": BROWSER_ACCEPT}
TOKEN = "H4vrSxSXP23nbpJvD1Ovoh0t0D6BC1bRhWfV_WWGvks"


def test_page_shows_title_description_pipeline_and_remaining_quota(
    make_client: MakeClient,
) -> None:
    """GET / names the button, the pipeline and the caller's remaining triggers."""
    client = make_client(title="Ship it", description="Deploys the site.", pipeline="noop://?name=site")
    client.post("/trigger")
    html = client.get("/").text
    assert "<h1>Ship it</h1>" in html and "Deploys the site." in html
    assert '<strong id="pipeline">site</strong>' in html
    assert "You can press <strong>2</strong> more times (limit 3 per 7 days)." in html
    assert re.search(r'The next one frees up <time datetime="[^"]+\+00:00">[^<]+ UTC</time>', html)


def test_page_escapes_configured_text(make_client: MakeClient) -> None:
    """Configured text is HTML-escaped, so a title cannot inject markup."""
    html = make_client(title="<script>alert(1)</script>").get("/").text
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_page_carries_strict_security_headers(make_client: MakeClient) -> None:
    """The page forbids inline script, framing, sniffing and referrers, and is not cached."""
    response = make_client().get("/")
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "default-src 'none'" in csp and "unsafe" not in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-store"


def test_page_has_no_inline_script_style_or_third_party_assets(make_client: MakeClient) -> None:
    """Every script and stylesheet is a same-origin file; no inline code the CSP would block."""
    html = make_client(params={"branch": {}}).get("/").text
    assert re.findall(r"<script[^>]*>", html) == ['<script src="static/page.js" defer>']
    assert not re.search(r"\son[a-z]+=|\sstyle=|<style", html)
    assert not re.search(r'(src|href)="(https?:)?//', html)


def test_page_urls_are_relative_so_a_path_prefix_works(make_client: MakeClient) -> None:
    """No URL starts with "/": behind an API Gateway stage (/api/) the page still finds
    its files, the form's target and the result page's way back."""
    client = make_client()
    for html in (client.get("/").text, client.post("/trigger", content=b"", headers=FORM).text):
        assert not re.search(r'(src|href|action)="/', html)
    js = client.get("/static/page.js").text
    assert not re.search(r"""(fetch|getJson)\([`"']/""", js)


def test_static_files_are_served_from_the_package(make_client: MakeClient) -> None:
    """page.js, page.css and the icon come from the package with the right types."""
    client = make_client()
    for path, kind in (
        ("/static/page.js", "text/javascript"),
        ("/static/page.css", "text/css"),
        ("/static/icon.svg", "image/svg+xml"),
    ):
        response = client.get(path)
        assert response.status_code == 200 and response.headers["content-type"].startswith(kind)
        assert response.headers["x-content-type-options"] == "nosniff"
    assert client.get("/static/../app.py").status_code == 404


def test_params_become_labelled_form_fields(make_client: MakeClient) -> None:
    """Choices become a <select>, others a text input; each has a label."""
    params = {
        "branch": {"choices": ["main", "release"], "default": "main", "label": "Branch"},
        "note": {"pattern": "^[a-z]{1,8}$"},
    }
    html = make_client(params=params).get("/").text
    assert '<label for="p-branch">Branch</label><select id="p-branch" name="branch">' in html
    assert '<option value="main" selected>main</option><option value="release">release</option>' in html
    assert '<label for="p-note">Note</label><input id="p-note" name="note" type="text"' in html
    assert 'data-pattern="^[a-z]{1,8}$"' in html


def test_form_post_from_a_browser_gets_a_result_page(make_client: MakeClient) -> None:
    """JavaScript off: the form POST is counted and answered with an HTML page linking back."""
    client = make_client()
    response = client.post("/trigger", content=b"", headers=FORM)
    assert response.status_code == 202
    assert response.headers["content-type"].startswith("text/html")
    assert "<h1>Your run has started</h1>" in response.text
    assert '<a class="button" href="./">Back to Deploy</a>' in response.text
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert client.get("/quota").json()["remaining"] == 2


def test_form_post_for_an_api_client_gets_json(make_client: MakeClient) -> None:
    """A form-encoded POST that does not prefer HTML is answered in JSON, as the API."""
    response = make_client().post("/trigger", content=b"", headers={**FORM, "accept": "*/*"})
    assert response.status_code == 202 and response.json()["status_url"].startswith("/runs/")


def test_form_fields_are_validated_like_the_api(make_client: MakeClient) -> None:
    """A value outside the choices or a field not allow-listed is refused (400), uncounted."""
    client = make_client(params={"branch": {"choices": ["main", "release"]}})
    bad = client.post("/trigger", content=b"branch=evil", headers=FORM)
    assert bad.status_code == 400 and "has a value that is not allowed" in bad.text
    unknown = client.post("/trigger", content=b"extra=1", headers={**FORM, "accept": "*/*"})
    assert unknown.status_code == 400 and unknown.json()["error"] == "unknown_parameter"
    good = client.post("/trigger", content=b"branch=release", headers=FORM)
    assert good.status_code == 202
    assert client.get("/quota").json()["remaining"] == 2


def test_blank_form_field_means_the_default(make_client: MakeClient) -> None:
    """An empty text field is left out, so the parameter's default applies."""
    client = make_client(params={"ref": {"default": "main"}})
    response = client.post("/trigger", content=b"ref=", headers={**FORM, "accept": "*/*"})
    assert response.status_code == 202


def test_oversized_form_is_413_and_costs_nothing(make_client: MakeClient) -> None:
    """The 4 KiB limit holds for forms too, answered with a page."""
    client = make_client(params={"note": {}})
    response = client.post("/trigger", content=b"note=" + b"a" * 5000, headers=FORM)
    assert response.status_code == 413 and "<h1>That did not work</h1>" in response.text
    assert client.get("/quota").json()["remaining"] == 3


def test_other_non_json_types_are_still_415(make_client: MakeClient) -> None:
    """Only JSON and the page's form are read; text/plain stays 415."""
    response = make_client().post("/trigger", content=b"x", headers={"content-type": "text/plain"})
    assert response.status_code == 415


def test_cross_site_form_post_is_refused_uncounted(make_client: MakeClient) -> None:
    """A form another site makes a visitor's browser post is refused and costs nothing."""
    client = make_client()
    response = client.post("/trigger", content=b"", headers={**FORM, "sec-fetch-site": "cross-site"})
    assert response.status_code == 403
    assert client.get("/quota").json()["remaining"] == 3


def test_spent_quota_result_page_says_when_to_come_back(make_client: MakeClient) -> None:
    """The fourth press gets a page naming the retry time (UTC without JavaScript)."""
    client = make_client()
    for _ in range(3):
        client.post("/trigger", content=b"", headers=FORM)
    response = client.post("/trigger", content=b"", headers=FORM)
    assert response.status_code == 429 and response.headers["retry-after"].isdigit()
    assert "<h1>You have used all your triggers</h1>" in response.text
    stamp = re.search(r'You can press again <time datetime="([^"]+)">', response.text)
    assert stamp is not None
    retry_at = datetime.fromisoformat(stamp.group(1))
    assert abs((retry_at - datetime.now(UTC)).total_seconds() - 7 * 86400) < 120
    page = client.get("/").text
    assert "You have used all your triggers (3 per 7 days). You can press again <time" in page


def test_kill_switch_reason_is_on_the_page_and_the_result(make_client: MakeClient) -> None:
    """With the switch on, the page shows the operator's reason, and so does a form press."""
    client = make_client(admin_token=TOKEN)
    on = client.post(
        "/admin/kill-switch",
        data={"state": "on", "reason": "Back at 5 <pm>"},
        headers={"authorization": f"Bearer {TOKEN}"},
        follow_redirects=False,
    )
    assert on.status_code == 303
    page = client.get("/").text
    assert '<p class="notice paused" id="paused"><strong>Paused:</strong> Back at 5 &lt;pm&gt;</p>' in page
    result = client.post("/trigger", content=b"", headers=FORM)
    assert result.status_code == 503
    assert "<h1>Triggers are paused</h1>" in result.text and "Back at 5 &lt;pm&gt;" in result.text


def test_a_pipeline_failure_page_shows_no_internal_text(make_client: MakeClient) -> None:
    """A start that fails is a 502 page with our words only: no address, no exception text."""
    dead = f"webhook+http://127.0.0.1:{free_port()}/start"
    response = make_client(pipeline=dead).post("/trigger", content=b"", headers=FORM)
    assert response.status_code == 502
    assert "<h1>The pipeline did not start</h1>" in response.text
    assert "127.0.0.1" not in response.text and "rror" not in response.text


def test_result_text_hides_server_errors_and_links_only_web_urls() -> None:
    """A 500 shows our own sentence; a run URL is linked only when it is http(s)."""
    heading, message = result_text(
        Outcome(500, {"error": "internal", "detail": "Traceback: secret", "request_id": "r"}), 0
    )
    assert heading == "Something went wrong" and "secret" not in message
    _, web = result_text(Outcome(202, {"run_id": "a1", "status": "queued", "url": "https://ci/x"}), 0)
    assert '<a href="https://ci/x" rel="noreferrer">' in web
    _, script = result_text(
        Outcome(202, {"run_id": "a1", "status": "queued", "url": "javascript:alert(1)"}), 0
    )
    assert "javascript:" not in script


def test_result_text_for_a_joined_run_says_it_was_joined() -> None:
    """A press that joined a run in progress is told so, not told a new run started."""
    heading, message = result_text(Outcome(202, {"run_id": "a1", "status": "joined"}), 0)
    assert heading == "You joined the run in progress" and "<code>a1</code>" in message


def test_accept_negotiation_prefers_json_unless_html_ranks_higher() -> None:
    """Browsers get HTML; curl's */*, JSON clients and low-ranked HTML get JSON."""
    assert prefers_html(BROWSER_ACCEPT)
    assert prefers_html("text/html")
    assert not prefers_html("*/*")
    assert not prefers_html("")
    assert not prefers_html("application/json, text/html;q=0.9")
    assert not prefers_html("text/html;q=0.5, */*")

"""The sample events the Lambda tests use are AWS's, rendered as AWS's own tool renders them."""

from __future__ import annotations

import base64
import json

import pytest

from tests.aws.samples import HTTP_SAMPLES, SAMPLES, http_event, sam_event

GENERATED = SAMPLES / "generated"


@pytest.mark.parametrize(
    ("file", "kind", "options"),
    [
        (
            "http-api-proxy.json",
            ("apigateway", "http-api-proxy"),
            {"method": "POST", "path": "trigger", "body": '{"a":1}'},
        ),
        (
            "aws-proxy.json",
            ("apigateway", "aws-proxy"),
            {"method": "GET", "path": "quota", "resource": "/quota", "body": ""},
        ),
        ("scheduled-event.json", ("cloudwatch", "scheduled-event"), {}),
    ],
)
def test_sam_templates_render_exactly_as_sam_local_generate_event_prints_them(
    file: str, kind: tuple[str, str], options: dict[str, str]
) -> None:
    """The renderer gives, value for value, what `sam local generate-event` printed."""
    printed = json.loads((GENERATED / file).read_text())
    assert sam_event(*kind, **options) == printed


@pytest.mark.parametrize("sample", list(HTTP_SAMPLES))
def test_re_aimed_events_change_only_method_path_body_and_source(sample: str) -> None:
    """An aimed event carries the method, path, body and sourceIp asked for (the body as the
    sample's kind sends it) and keeps the rest of AWS's sample."""
    event = http_event(sample, "POST", "/trigger", source_ip="198.51.100.77", body='{"ref":"main"}')
    context = event["requestContext"]
    if event.get("version") == "2.0":
        assert (context["http"]["method"], event["rawPath"], context["http"]["sourceIp"]) == (
            "POST",
            "/trigger",
            "198.51.100.77",
        )
    else:
        assert (event["httpMethod"], event["path"], context["identity"]["sourceIp"]) == (
            "POST",
            "/trigger",
            "198.51.100.77",
        )
    body = base64.b64decode(event["body"]).decode() if event["isBase64Encoded"] else event["body"]
    assert body == '{"ref":"main"}'
    assert context["accountId"] == "123456789012"  # the sample's own value, untouched

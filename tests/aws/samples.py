"""Lambda events as AWS publishes them (tests/aws/events/aws/, see its README), re-aimed.

Only what a test must choose changes, in code, never in the files: the method,
path and body of an API Gateway event, its ``sourceIp`` (the samples' addresses
are placeholders, some even CIDRs), and the parts of a stream or EventBridge
record that name our table or our pipeline.

The SAM CLI's samples are templates that ``sam local generate-event`` renders;
:func:`sam_event` renders them the same way (aws-sam-cli
``samcli/lib/generated_sample_events/events.py`` ``Events.generate_event``):
every tag of ``event-mapping.json`` is an option with its default, values with
``"encoding": "base64"`` are base64-encoded, ``"type": "dict"`` values replace
their key's value after rendering, and the JSON text (dumped with indent 2) is
rendered as a mustache template whose triple braces insert values unescaped.
"""

from __future__ import annotations

import base64
import copy
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

SAMPLES = Path(__file__).parent / "events" / "aws"
_TRIPLE = re.compile(r"\{\{\{\s*([^}]+?)\s*\}\}\}")

#: Which published sample each API Gateway kind comes from.
HTTP_SAMPLES = {
    "sam-rest": ("apigateway", "aws-proxy"),  # `sam local generate-event apigateway aws-proxy`
    "sam-http": ("apigateway", "http-api-proxy"),  # `... apigateway http-api-proxy`
    "powertools-rest": "powertools-apiGatewayProxyEvent.json",
    "powertools-http": "powertools-apiGatewayProxyV2Event.json",
}


@cache
def _text(name: str) -> str:
    return (SAMPLES / name).read_text(encoding="utf-8")


def published(name: str) -> dict[str, Any]:
    """A stored sample, parsed (a fresh copy every call)."""
    found: dict[str, Any] = json.loads(_text(name))
    return found


def sam_event(service: str, kind: str, **options: str) -> dict[str, Any]:
    """What ``sam local generate-event SERVICE KIND --option value ...`` prints, parsed.

    ``options`` use the CLI's names with ``_`` for ``-`` (click's convention, which
    is also how the templates spell them, e.g. ``account_id``).
    """
    mapping = json.loads(_text("sam-event-mapping.json"))[service][kind]
    tags: dict[str, dict[str, Any]] = mapping["tags"]
    # click passes every option, defaulted; its keyword names use "_" for "-".
    values: dict[str, Any] = {name.replace("-", "_"): spec.get("default", "") for name, spec in tags.items()}
    values.update(options)
    dicts = {}
    for name, spec in tags.items():
        key = name.replace("-", "_")
        if spec.get("type") == "dict":
            dicts[name] = values[key]
            values[key] = f"__DICT_PLACEHOLDER_{name}__"
        elif spec.get("encoding") == "base64":
            values[key] = base64.b64encode(str(values[key]).encode("utf8")).decode("utf-8")
        elif spec.get("encoding") == "url":
            raise NotImplementedError("no sample used here url-encodes a value")
    template = json.dumps(json.loads(_text(f"sam-{mapping['filename']}.json")), indent=2)
    rendered = _TRIPLE.sub(lambda m: str(values.get(m[1], "")), template)
    assert "{{" not in rendered, "a placeholder this renderer does not know"
    event: dict[str, Any] = json.loads(rendered)
    keys = {k.lower(): k for k in event}
    for name, value in dicts.items():
        key = keys.get(name.lower())
        if key and event[key] == f"__DICT_PLACEHOLDER_{name}__":
            event[key] = json.loads(value)
    return event


def http_event(
    sample: str,
    method: str,
    path: str,
    *,
    source_ip: str,
    body: str = "",
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """An API Gateway proxy event from one of :data:`HTTP_SAMPLES`, aimed at ``method path``.

    A non-empty body is sent as JSON (the samples carry no Content-Type). SAM's
    samples arrive base64-encoded, as ``sam local generate-event`` makes them.
    """
    extra = {**({"content-type": "application/json"} if body else {}), **(headers or {})}
    source = HTTP_SAMPLES[sample]
    if isinstance(source, tuple):
        options = {"method": method, "path": path.lstrip("/"), "body": body}
        if source[1] == "aws-proxy":
            options["resource"] = path
        event = sam_event(*source, **options)
    else:
        event = published(source)
        event.update(body=body or None, isBase64Encoded=False)
    context = event["requestContext"]
    if event.get("version") == "2.0":
        context["http"].update(method=method, path=path, sourceIp=source_ip)
        event["rawPath"] = path
        event["headers"].update(extra)
    else:
        event.update(httpMethod=method, path=path, resource=path)
        context.update(httpMethod=method, resourcePath=path)
        context["identity"]["sourceIp"] = source_ip
        event["headers"].update(extra)
        event["multiValueHeaders"].update({k: [v] for k, v in extra.items()})
    return event


def scheduled_event() -> dict[str, Any]:
    """``sam local generate-event cloudwatch scheduled-event``: what the schedule delivers."""
    return sam_event("cloudwatch", "scheduled-event")


def stream_event(table_arn: str, keys: list[str], event_name: str = "INSERT") -> dict[str, Any]:
    """A DynamoDB Streams batch in the shape of AWS's sample, one record per item key."""
    sample = published("powertools-dynamoStreamEvent.json")["Records"][0]
    records = []
    for i, pk in enumerate(keys):
        record = copy.deepcopy(sample)
        record.update(eventID=str(i + 1), eventName=event_name, eventSourceARN=f"{table_arn}/stream/x")
        record["dynamodb"].update(Keys={"pk": {"S": pk}}, StreamViewType="KEYS_ONLY", SequenceNumber=str(i))
        record["dynamodb"].pop("NewImage", None)
        records.append(record)
    return {"Records": records}


def pipeline_state_event(pipeline: str, execution_id: str, state: str, time: str) -> dict[str, Any]:
    """An EventBridge event (AWS's sample envelope) carrying a CodePipeline execution state change.

    The detail fields are those of the CodePipeline User Guide, "CodePipeline event
    examples", "Pipeline execution state change".
    """
    event = published("powertools-eventBridgeEvent.json")
    event.update(
        source="aws.codepipeline",
        time=time,
        resources=[f"arn:aws:codepipeline:us-east-1:123456789012:{pipeline}"],
    )
    event["detail-type"] = "CodePipeline Pipeline Execution State Change"
    event["detail"] = {
        "pipeline": pipeline,
        "execution-id": execution_id,
        "execution-trigger": {"trigger-type": "StartPipelineExecution", "trigger-detail": "arn:aws:sts::x"},
        "state": state,
        "version": 1.0,
    }
    return event

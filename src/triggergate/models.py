"""The request and response shapes that cross the core, independent of any transport."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from triggergate.errors import RequestError
from triggergate.settings import ParamSpec

_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")


@dataclass(frozen=True)
class TriggerRequest:
    """One press of the button, as the transport saw it.

    ``peer`` is the transport peer address (API Gateway's sourceIp on Lambda);
    ``payload`` is the parsed JSON body, or None when there was none.
    """

    peer: str | None
    headers: Sequence[tuple[str, str]]
    request_id: str
    payload: Mapping[str, Any] | None = None
    idempotency_key: str | None = None


@dataclass
class Outcome:
    """What the transport sends back: a status, a JSON body and extra headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def error(status: int, code: str, detail: str, request_id: str, **headers: str) -> Outcome:
    """The only public error shape: code, short safe text, request id."""
    return Outcome(status, {"error": code, "detail": detail, "request_id": request_id}, headers)


def check_idempotency_key(value: str | None) -> str | None:
    if value is None:
        return None
    if not _IDEMPOTENCY_KEY.fullmatch(value):
        raise RequestError(
            400, "bad_idempotency_key", "Idempotency-Key must be 1-255 visible ASCII characters"
        )
    return value


def validate_params(payload: Mapping[str, Any] | None, specs: Mapping[str, ParamSpec]) -> dict[str, str]:
    """Allow-listed parameters only, each checked against its pattern and choices.

    The body may be ``{"params": {...}}``; a top-level ``ref`` is a shorthand
    for the ``ref`` parameter, which must be allow-listed like any other.
    """
    given: list[tuple[str, Any]] = []
    if payload is not None:
        if not isinstance(payload, Mapping):
            raise RequestError(400, "bad_body", "the body must be a JSON object")
        unknown = set(payload) - {"ref", "params"}
        if unknown:
            raise RequestError(400, "bad_body", "only 'ref' and 'params' are accepted in the body")
        raw = payload.get("params")
        raw = {} if raw is None else raw  # not `or {}`: [], "" and 0 are not objects
        if not isinstance(raw, Mapping):
            raise RequestError(400, "bad_body", "'params' must be a JSON object")
        given = list(raw.items())
        if payload.get("ref") is not None:
            # Checked like params.ref (both must be valid); the top-level one wins.
            given.append(("ref", payload["ref"]))
    result: dict[str, str] = {}
    for name, value in given:
        spec = specs.get(name)
        if spec is None:
            raise RequestError(400, "unknown_parameter", "a parameter is not allowed by this gate")
        if (
            not isinstance(value, str)
            or not re.fullmatch(spec.pattern, value)
            or (spec.choices and value not in spec.choices)
        ):
            raise RequestError(400, "bad_parameter", f"parameter '{name}' has a value that is not allowed")
        result[name] = value
    for name, spec in specs.items():
        if name not in result:
            if spec.default is not None:
                result[name] = spec.default
            elif spec.required:
                raise RequestError(400, "missing_parameter", f"parameter '{name}' is required")
    return result

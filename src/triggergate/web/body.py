"""The ``POST /trigger`` body as the flow takes it, read the same way by the route and
the deny fast path."""

from __future__ import annotations

import json
from typing import Any

from triggergate.errors import RequestError
from triggergate.web.page import FORM_TYPE, form_payload

MAX_BODY = 4096  # bytes; a longer body is a 413
JSON_TYPE = "application/json"


def parse_payload(content_type: str, body: bytes) -> Any:
    """None for an empty body, the page form's fields, or the parsed JSON.

    Raises RequestError: 415 for any other media type, 400 for broken JSON or form.
    """
    if not body.strip():
        return None
    if content_type == FORM_TYPE:
        return form_payload(body)
    if content_type != JSON_TYPE:
        raise RequestError(415, "unsupported_media_type", "send JSON (application/json)")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(400, "bad_json", "the body is not valid JSON") from exc

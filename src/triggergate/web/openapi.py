"""The OpenAPI 3.1 document for the HTTP surface; kept beside the routes it describes."""

from __future__ import annotations

from typing import Any

from triggergate import __version__
from triggergate.settings import Settings

FORM_TYPE = "application/x-www-form-urlencoded"

ERROR = {
    "type": "object",
    "required": ["error", "detail", "request_id"],
    "properties": {
        "error": {"type": "string"},
        "detail": {"type": "string"},
        "request_id": {"type": "string"},
    },
    "additionalProperties": False,
}
RATE_HEADERS = {
    "RateLimit-Policy": {"schema": {"type": "string"}},
    "X-Request-Id": {"schema": {"type": "string"}},
}


def _error(description: str, retry_after: bool = False) -> dict[str, Any]:
    headers = dict(RATE_HEADERS)
    if retry_after:
        headers["Retry-After"] = {"schema": {"type": "string"}}
    return {
        "description": description,
        "headers": headers,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "description": description,
        "headers": RATE_HEADERS,
        "content": {"application/json": {"schema": schema}},
    }


def _form_field(schema: dict[str, Any]) -> dict[str, Any]:
    """A form field: blank means "not given" and values are trimmed (page.form_payload)."""
    blank = {"type": "string", "pattern": "^\\s*$"}
    pattern = str(schema.get("pattern", ""))
    if "enum" in schema or not (pattern.startswith("^") and pattern.endswith("$")):
        return {"anyOf": [schema, blank]}
    return {"type": "string", "pattern": f"^\\s*(?:{pattern[1:-1]})?\\s*$"}


def openapi_document(settings: Settings) -> dict[str, Any]:
    params = {
        name: {
            "type": "string",
            "pattern": spec.pattern,
            **({"enum": spec.choices} if spec.choices else {}),
        }
        for name, spec in settings.params.items()
    }
    run = {
        "type": "object",
        "required": ["run_id", "status", "status_url"],
        "properties": {
            "run_id": {"type": "string"},
            "status": {"type": "string"},
            "status_url": {"type": "string"},
            "url": {"type": ["string", "null"]},
        },
    }
    not_found = _error("No such resource")
    _error("Method not allowed")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "triggergate",
            "version": __version__,
            "description": settings.description,
        },
        "paths": {
            "/trigger": {
                "post": {
                    "summary": "Press the button: start one pipeline run if the caller's quota allows",
                    "parameters": [
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,255}$"},
                        }
                    ],
                    "requestBody": {
                        "required": False,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": ["object", "null"],  # a JSON null body: no body
                                    "additionalProperties": False,
                                    "properties": {
                                        # null means "not given"; a string only when
                                        # "ref" is an allow-listed parameter.
                                        "ref": {**params["ref"], "type": ["string", "null"]}
                                        if "ref" in params
                                        else {"type": "null"},
                                        "params": {
                                            "type": ["object", "null"],
                                            "properties": params,
                                            "additionalProperties": False,
                                        },
                                    },
                                }
                            },
                            # The page's <form> without JavaScript; an Accept that prefers
                            # text/html gets an HTML result page instead of JSON.
                            FORM_TYPE: {
                                "schema": {
                                    "type": "object",
                                    "properties": {k: _form_field(v) for k, v in params.items()},
                                    "additionalProperties": False,
                                }
                            },
                        },
                    },
                    "responses": {
                        "202": {
                            **_json("Accepted: a run started (or was joined)", run),
                            "headers": {**RATE_HEADERS, "Location": {"schema": {"type": "string"}}},
                            "content": {
                                "application/json": {"schema": run},
                                "text/html": {
                                    "schema": {"type": "string"},
                                    "description": "a form POST whose Accept prefers HTML; "
                                    "every other status answers such a request in HTML too",
                                },
                            },
                        },
                        "400": _error("Bad request"),
                        "403": _error("The client is on the deny list, or a cross-site form post"),
                        "409": _error("A request with this Idempotency-Key is still running"),
                        "413": _error("Body larger than 4 KiB"),
                        "415": _error("Body is neither JSON nor the page's form"),
                        "429": _error("Quota spent", retry_after=True),
                        "502": _error("The pipeline could not be started; the trigger was refunded"),
                        "503": _error("Store unavailable, budget exhausted or paused", retry_after=True),
                    },
                }
            },
            "/quota": {
                "get": {
                    "summary": "The caller's remaining triggers",
                    "responses": {
                        "200": _json("Quota", {"type": "object"}),
                        "400": _error("Bad client address"),
                        "503": _error("Store unavailable", retry_after=True),
                    },
                }
            },
            "/runs/{run_id}": {
                "get": {
                    "summary": "Status of a run started through the gate",
                    "parameters": [
                        {
                            "name": "run_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": _json("Run", {"type": "object", "required": ["run_id", "status"]}),
                        "404": not_found,
                        "503": _error("Store unavailable", retry_after=True),
                    },
                }
            },
            "/": {
                "get": {
                    "summary": "The interactive page",
                    "responses": {
                        "200": {
                            "description": "HTML page",
                            "content": {"text/html": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "Liveness",
                    "responses": {"200": _json("Alive", {"type": "object"})},
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Readiness (store and backend reachable)",
                    "responses": {
                        "200": _json("Ready", {"type": "object"}),
                        "503": _json("Not ready", {"type": "object"}),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics (metrics_allow networks, or the admin token)",
                    "responses": {
                        "200": {
                            "description": "Metrics",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        "403": _error("The caller is outside metrics_allow and sent no valid admin token"),
                        "429": _error("Too many wrong admin tokens", retry_after=True),
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {"200": _json("OpenAPI document", {"type": "object"})},
                }
            },
        },
        "components": {"schemas": {"Error": ERROR}},
    }

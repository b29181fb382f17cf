"""Lambda entry points: ``handler`` for API Gateway, ``events_handler`` for the rest.

``handler`` serves the same ASGI app as ``triggergate serve`` through Mangum,
for REST API (v1) and HTTP API (v2) proxy events. The client is API Gateway's
``sourceIp`` (Mangum puts it in ``scope["client"]``); with no trusted proxies
configured, a client-sent ``X-Forwarded-For`` changes nothing.

``events_handler`` takes CodePipeline execution state changes (EventBridge),
DynamoDB Streams batches of new outbox items (alerts to deliver now) and the
schedule (reconcile, retry alerts, sweep).

Imported by the Lambda runtime (``AWS_LAMBDA_FUNCTION_NAME`` is set), this
module builds the app during Lambda's init phase: secrets named by
``TRIGGERGATE_<NAME>_SSM`` are read from Parameter Store, the settings are
loaded, every AWS client is built and the store is opened, so no request pays
for any of it (see :mod:`triggergate.aws.lambda_app`). A configuration error
fails the init, which Lambda reports and retries on the next event. Imported
anywhere else (tests, tools), the app is built on first use instead.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from triggergate.aws.lambda_app import LambdaApp

_lock = threading.Lock()
_current: LambdaApp | None = None


def start() -> LambdaApp:
    """Build and prepare the app from the environment (Lambda's init phase)."""
    from triggergate.aws.secrets import load_ssm_secrets
    from triggergate.web.app import create_app

    load_ssm_secrets(os.environ)
    app = LambdaApp(create_app())
    app.prepare()
    return app


def current() -> LambdaApp:
    """The process's app: the one built at init on Lambda, else built now and reused."""
    global _current
    with _lock:
        if _current is None:
            _current = start()
        return _current


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """API Gateway proxy events (REST v1 or HTTP v2) -> the ASGI app -> a proxy response."""
    return current().http(event, context)


def events_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Pipeline state changes, outbox stream batches, and the periodic maintenance schedule."""
    return current().events(event, context)


if "AWS_LAMBDA_FUNCTION_NAME" in os.environ:  # set by the Lambda runtime: this import is init
    _current = start()

"""One ASGI app, its service and one event loop per Lambda execution environment.

Lambda runs a function in phases: *init* (the handler's module is imported,
once per environment, before any event and outside any request's deadline),
then one *invoke* per event, one at a time, and it freezes the process the
moment the handler returns: nothing runs after a response. So:

* everything slow that needs no request happens in :meth:`LambdaApp.prepare`,
  during init: every AWS client is built (boto3's import and a client's
  service model cost ~0.1 s of CPU, a third of a second at the share of a vCPU
  a 512 MB function gets, which the 0.8 s store deadline cannot absorb), the
  store is opened, and one bounded read opens the store's connection;
* a request does only its own work and returns: alerts are written to the
  outbox with the request's other writes and delivered by the events function,
  which a DynamoDB Stream on the outbox items invokes (the schedule retries);
* the periodic work a server's background loop does runs on a schedule.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import json
import logging
import time
import uuid
from collections.abc import Awaitable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from triggergate.aws.outcomes import record_outcome
from triggergate.errors import StoreError
from triggergate.failclosed import within
from triggergate.models import error
from triggergate.ratelimit_headers import policy_header
from triggergate.stores.dynamodb import DynamoDBStore

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from triggergate.service import Service

log = logging.getLogger("triggergate.aws")
T = TypeVar("T")
DELIVERY_SECONDS = 20.0  # a stream batch's delivery, within the function's 28 s timeout
STATE_CHANGE = "CodePipeline Pipeline Execution State Change"
DENIALS = frozenset({403, 429})
BATCH = 50  # outbox items claimed per pass


class LambdaApp:
    """One ASGI app, its service and one event loop, reused by every invocation of a process."""

    def __init__(self, app: Starlette) -> None:
        from mangum.adapter import DEFAULT_TEXT_MIME_TYPES  # lazily: only Lambda needs Mangum
        from mangum.types import LambdaConfig

        self.app = app
        self.service: Service = app.state.service
        self.config = LambdaConfig(
            api_gateway_base_path="/", text_mime_types=list(DEFAULT_TEXT_MIME_TYPES), exclude_headers=[]
        )
        self.loop = asyncio.new_event_loop()
        # Mangum logs every request at INFO ("POST /trigger 429"): a log line per denial,
        # which CloudWatch bills; the app logs what matters and denials once a minute.
        logging.getLogger("mangum").setLevel(logging.WARNING)

    def prepare(self) -> None:
        """The init phase's work: clients built, store opened, one bounded warm-up read."""
        from mangum.handlers import APIGateway, HTTPGateway  # noqa: F401 - imported now, not per request

        self.service.prepare()
        self.run(self.service.store.open())
        try:
            # Opens the connection and loads what botocore loads on a client's first call
            # (measured: a first call costs ~3x a warm one). An unreachable store is the
            # requests' business: they fail closed within their own deadline.
            self.run(within(self.service.store.ping(), self.service.policy.store_timeout))
        except StoreError as exc:
            log.warning("store not reachable during init", extra={"cause": str(exc)})

    def run(self, work: Awaitable[T]) -> T:
        """Run a coroutine on this process's loop."""
        return self.loop.run_until_complete(work)

    def close(self) -> None:
        """Release the service's connections and the loop (tests; Lambda just freezes)."""
        self.loop.run_until_complete(self.service.close())
        self.loop.close()

    # -- API Gateway -----------------------------------------------------------------------

    def http(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        from mangum.handlers import APIGateway, HTTPGateway
        from mangum.protocols.http import HTTPCycle

        # Mangum's own adapter runs on asyncio.get_event_loop(), a process-global it creates
        # and never closes; its event handlers and HTTP cycle on our one loop do the same job.
        kind = next((h for h in (HTTPGateway, APIGateway) if h.infer(event, context, self.config)), None)
        if kind is None:
            raise ValueError("not an API Gateway proxy event (REST v1 or HTTP API v2)")
        if not _body_decodes(event):
            # Mangum's b64decode would raise (API Gateway then answers 502) or, laxer,
            # drop the characters outside the alphabet and pass on a body nobody sent.
            plain = {**copy.copy(event), "body": None, "isBase64Encoded": False}
            return self._error(kind(plain, context, self.config), 400, "bad_body", "the body is not base64")
        request = kind(event, context, self.config)
        cycle = HTTPCycle(request.scope, request.body)
        self.run(cycle.run(self.app))
        response: dict[str, Any] = request(
            {"status": cycle.status, "headers": cycle.headers, "body": cycle.body}
        )
        if response.get("statusCode") in DENIALS:
            self._flush_denials()
        return response

    def _error(self, request: Any, status: int, code: str, detail: str) -> dict[str, Any]:
        """A safe error answer in the event's own response format, with the usual headers."""
        rid = uuid.uuid4().hex
        outcome = error(status, code, detail, rid)
        headers = [
            (b"content-type", b"application/json"),
            (b"x-request-id", rid.encode()),
            (b"ratelimit-policy", policy_header(self.service.policy.gate.limits).encode()),
        ]
        body = json.dumps(outcome.body, separators=(",", ":")).encode()
        answer: dict[str, Any] = request({"status": status, "headers": headers, "body": body})
        return answer

    def _flush_denials(self) -> None:
        """Write the denial summary of a finished minute, if one is due (a server's loop does
        this every few seconds; here a denial's own invocation does it, once a minute).

        Only after a denial, so a 503 is never delayed, and bounded by the store deadline.
        """
        try:
            self.run(within(self.service.maintenance.flush_denials(), self.service.policy.store_timeout))
        except StoreError as exc:
            self.service.store_alarm("", exc)

    # -- EventBridge, DynamoDB Streams and the schedule -------------------------------------

    def events(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        if event.get("detail-type") == STATE_CHANGE:
            detail = dict(event.get("detail", {}))
            age = _age(event.get("time"), self.service.clock())
            recorded = self.run(record_outcome(self.service, detail, age))
            return {"recorded": recorded}
        records = event.get("Records")
        if isinstance(records, list) and records:
            return {"delivered": self.run(self._deliver_stream(records))}
        # Anything else (the schedule) is the periodic work a server's background loop does.
        reconciled = self.run(self.service.reconcile())
        delivered = self.run(self._deliver_due())
        swept = self.run(self.service.store.sweep())
        return {"reconciled": reconciled, "delivered": delivered, "swept": swept}

    async def _deliver_stream(self, records: list[dict[str, Any]]) -> int:
        """Deliver the outbox items a DynamoDB Streams batch announces, by their keys.

        The claim is a conditional write on each item itself, not the index query the
        schedule's pass uses: a global secondary index may lag behind the stream. An item
        another pass already claimed, or a failed send, is left to the outbox's retries.
        """
        keys = [
            str(r.get("dynamodb", {}).get("Keys", {}).get("pk", {}).get("S", ""))
            for r in records
            if r.get("eventSource") == "aws:dynamodb" and r.get("eventName") == "INSERT"
        ]
        ids = [key[2:] for key in keys if key.startswith("o#")]
        store, outbox = self.service.store, self.service.outbox
        if not isinstance(store, DynamoDBStore):  # only a DynamoDB table has the stream
            return await self._deliver_due()
        if not ids:
            return 0  # the template's filter sends only new outbox items; anything else is not ours
        try:
            claimed = store.claim_ids(ids, self.service.clock(), outbox.lease)
            items = await asyncio.wait_for(claimed, DELIVERY_SECONDS)
            return await asyncio.wait_for(outbox.deliver(items), DELIVERY_SECONDS)
        except (StoreError, TimeoutError):
            log.warning("alert delivery deferred", exc_info=True)
            return 0

    async def _deliver_due(self) -> int:
        """What is due now, in batches until none is full or time runs out."""
        delivered, deadline = 0, time.monotonic() + DELIVERY_SECONDS
        try:
            while time.monotonic() < deadline:
                left = deadline - time.monotonic()
                batch = self.service.outbox.deliver_due(BATCH)
                done = await asyncio.wait_for(batch, max(left, 0.1))
                delivered += done
                if done < BATCH:
                    break
        except (StoreError, TimeoutError):
            log.warning("alert delivery deferred", exc_info=True)
        return delivered


def _body_decodes(event: dict[str, Any]) -> bool:
    """False when the event says its body is base64 and it is not (RFC 4648, padded)."""
    body = event.get("body")
    if not event.get("isBase64Encoded") or not body:
        return True
    try:
        base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError, TypeError):
        return False
    return True


def _age(stamp: Any, now: float) -> float:
    try:
        return now - datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0

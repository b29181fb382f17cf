"""The ``triggergate`` command: serve, check-config, migrate, quota, audit, dlq, kill-switch."""

from __future__ import annotations

import asyncio
import json
import math
import os
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from triggergate.audit import audit_record, iso
from triggergate.aws.secrets import load_ssm_secrets
from triggergate.errors import ConfigurationError, RequestError, StoreError
from triggergate.gate import BUDGET_KEY, KILL_SWITCH
from triggergate.identity import resolve_client
from triggergate.quota import Check
from triggergate.registry import store_from_url
from triggergate.settings import Settings, load_settings, parse_duration, raw_adapter_urls
from triggergate.stores.base import Batch, Record, Store
from triggergate.wiring import adapter_notes, check_adapters, check_urls, context, policy

T = TypeVar("T")
EXIT_CONFIG = 2


def _fail(message: str, code: int = EXIT_CONFIG) -> None:
    click.echo(message, err=True)
    sys.exit(code)


def _settings(config: str | None) -> Settings:
    try:
        load_ssm_secrets(os.environ)  # TRIGGERGATE_<NAME>_SSM, once, before anything reads them
        return load_settings(config)
    except ConfigurationError as exc:
        _fail(f"triggergate: configuration is invalid:\n{exc}")
        raise  # unreachable; keeps type checkers sure


def _with_store(config: str | None, job: Callable[[Settings, Store], Awaitable[T]]) -> T:
    settings = _settings(config)

    async def run() -> T:
        store = store_from_url(settings.store, context(settings, time.time))
        await store.open()
        try:
            return await job(settings, store)
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except ConfigurationError as exc:
        _fail(f"triggergate: {exc}")
    except StoreError as exc:
        _fail(f"triggergate: store unavailable: {exc}")
    raise AssertionError("unreachable")


config_option = click.option(
    "--config",
    "config",
    type=click.Path(dir_okay=False),
    default=None,
    help="TOML config file (default: $TRIGGERGATE_CONFIG).",
)


@click.group()
def main() -> None:
    """A public, abuse-proof trigger for a CI/CD pipeline."""


def drain_seconds(settings: Settings) -> float:
    """How long ``serve`` lets requests in flight finish after SIGTERM before cancelling them.

    The longest one trigger can take: a pipeline start that times out and the lookup of
    that start which follows (each bounded by ``backend_timeout``), plus its store calls
    (at most ten, each bounded by ``store_timeout``). A shorter drain would cut such a
    request off and leave its client without an answer. A stop with nothing in flight
    does not wait.
    """
    return 2 * settings.backend_timeout + 10 * settings.store_timeout


@main.command()
@config_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64))
def serve(config: str | None, host: str, port: int, workers: int) -> None:
    """Serve the HTTP API and page."""
    import uvicorn

    from triggergate.web.limits import BoundedHttpTools

    if config:
        os.environ["TRIGGERGATE_CONFIG"] = str(Path(config).resolve())
    settings = _settings(None)
    problems = check_adapters(settings)
    if problems:
        _fail("triggergate: configuration is invalid:\n" + "\n".join(problems))
    _with_store(None, lambda s, store: store.ping())  # fail at start, exit 2, if unreachable
    uvicorn.run(
        "triggergate.web.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        server_header=False,
        proxy_headers=False,
        http=BoundedHttpTools,  # httptools alone buffers a head of any size: web/limits.py
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=math.ceil(drain_seconds(settings)),
    )


@main.command("check-config")
@click.argument("file", required=False, type=click.Path(dir_okay=False))
def check_config(file: str | None) -> None:
    """Validate a config file and the environment; print every problem; exit 2 if any."""
    try:
        settings = load_settings(file)
    except ConfigurationError as exc:
        problems = [str(exc), *check_urls(raw_adapter_urls(file))]
        _fail("triggergate: configuration is invalid:\n" + "\n".join(problems))
        return
    problems = check_adapters(settings)
    if problems:
        _fail("triggergate: configuration is invalid:\n" + "\n".join(problems))
    click.echo(
        f"configuration ok: store={settings.store.split('://')[0]}://, "
        f"pipeline={settings.pipeline.split('://')[0]}://, limits={','.join(settings.limits)}"
        + (f", budget={','.join(settings.budget)}" if settings.budget else "")
    )
    for note in adapter_notes(settings):
        click.echo(f"note: {note}")


@main.command()
@config_option
def migrate(config: str | None) -> None:
    """Create or upgrade the store's schema."""

    async def job(settings: Settings, store: Store) -> None:
        upgrade = getattr(store, "migrate", None)
        if upgrade is not None:
            await upgrade()

    _with_store(config, job)
    click.echo("schema up to date")


def _client_check(settings: Settings, client: str) -> Check:
    try:
        key = resolve_client(client, [], policy(settings).identity).key
    except RequestError:
        key = client.removeprefix("c:")
    return Check(f"c:{key}", settings.client_limits)


@main.group()
def quota() -> None:
    """Inspect or reset a client's quota."""


@quota.command("show")
@config_option
@click.argument("client")
def quota_show(config: str | None, client: str) -> None:
    """Show a client's (address or key) used and remaining triggers."""

    async def job(settings: Settings, store: Store) -> dict[str, Any]:
        check = _client_check(settings, client)
        checks = [check] + ([Check(BUDGET_KEY, settings.budget_limits)] if settings.budget else [])
        d = await store.peek(checks)
        out = {
            v.key: {
                "limit": str(v.limit),
                "used": v.used,
                "remaining": v.remaining,
                "retry_after": round(v.retry_after),
            }
            for v in d.verdicts
        }
        return out

    click.echo(json.dumps(_with_store(config, job), indent=2))


@quota.command("reset")
@config_option
@click.argument("client")
def quota_reset(config: str | None, client: str) -> None:
    """Give a client (address or key) its whole quota back."""

    async def job(settings: Settings, store: Store) -> int:
        check = _client_check(settings, client)
        dropped = await store.reset(check.key)
        now = time.time()
        await store.apply(
            Batch(
                records=[
                    audit_record(
                        now,
                        parse_duration(settings.audit_retention),
                        "admin",
                        action="quota_reset",
                        client_key=check.key.removeprefix("c:"),
                        count=dropped,
                    )
                ]
            )
        )
        return dropped

    click.echo(f"reset {client}: {_with_store(config, job)} slot(s) given back")


def _since(text: str | None) -> float:
    if not text:
        return 0.0
    try:
        return time.time() - parse_duration(text)
    except ConfigurationError:
        try:
            return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()
        except ValueError:
            _fail(f"triggergate: --since/--until {text!r}: use a duration (24h, 7d) or an ISO date")
            return 0.0


@main.group()
def audit() -> None:
    """Read the audit log."""


@audit.command("list")
@config_option
@click.option("--since", help="a duration back from now (24h, 7d) or an ISO date")
@click.option("--until", "until_", help="a duration back from now or an ISO date")
@click.option("--client", help="only this client key")
@click.option(
    "--outcome",
    type=click.Choice(["accepted", "refunded", "failed", "uncertain", "denied", "recovered", "admin"]),
)
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10000))
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
def audit_list(
    config: str | None,
    since: str | None,
    until_: str | None,
    client: str | None,
    outcome: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List audit records, newest first."""

    async def job(settings: Settings, store: Store) -> list[dict[str, Any]]:
        until = _since(until_) if until_ else time.time() + 1
        docs = await store.query("audit", since=_since(since), until=until, limit=10000)
        docs = [
            d
            for d in docs
            if (not outcome or d.get("event") == outcome)
            and (
                not client
                or d.get("client_key") == client
                or d.get("client") == client
                or client in d.get("top", {})
            )
        ]
        return docs[:limit]

    docs = _with_store(config, job)
    if as_json:
        for doc in docs:
            click.echo(json.dumps(doc, sort_keys=True))
        return
    click.echo(f"{'time':20}  {'event':9}  {'client':24}  {'run':32}  detail")
    for d in docs:
        detail = d.get("detail") or (
            f"{d.get('total')} denials from {d.get('distinct_keys')} keys"
            if d.get("event") == "denied"
            else d.get("action", "")
        )
        click.echo(
            f"{iso(d['at']):20}  {d.get('event', ''):9}  {d.get('client_key', '-')!s:24}  "
            f"{d.get('run_id', '-')!s:32}  {detail}"
        )


@main.group()
def dlq() -> None:
    """Dead-lettered notifications."""


@dlq.command("list")
@config_option
def dlq_list(config: str | None) -> None:
    """List dead-lettered notifications."""
    items = _with_store(config, lambda s, store: store.dead(1000))
    for item in items:
        click.echo(
            json.dumps(
                {
                    "id": item.id,
                    "target": item.target,
                    "attempts": item.attempts,
                    "error": item.error,
                    "subject": item.payload.get("subject"),
                }
            )
        )
    if not items:
        click.echo("no dead letters")


@dlq.command("retry")
@config_option
@click.argument("item_id", required=False)
def dlq_retry(config: str | None, item_id: str | None) -> None:
    """Send one dead letter (or all, without ID) back to the outbox."""
    count = _with_store(config, lambda s, store: store.revive(item_id))
    click.echo(f"{count} notification(s) queued again")


@main.command("kill-switch")
@config_option
@click.argument("state", type=click.Choice(["on", "off"]))
@click.option("--reason", default="triggers are paused by the operator", show_default=True)
@click.option("--retry-after", default=600, show_default=True, type=click.IntRange(1, 86400))
def kill_switch(config: str | None, state: str, reason: str, retry_after: int) -> None:
    """Pause (on) or resume (off) every trigger on every replica."""

    async def job(settings: Settings, store: Store) -> None:
        now = time.time()
        retention = parse_duration(settings.audit_retention)
        if state == "on":
            flag = Record(*KILL_SWITCH, {"at": now, "reason": reason, "retry_after": retry_after})
            await store.apply(Batch(records=[flag]))
        else:
            await store.delete(*KILL_SWITCH)
        await store.apply(
            Batch(
                records=[
                    audit_record(
                        now,
                        retention,
                        "admin",
                        action=f"kill_switch_{state}",
                        detail=reason if state == "on" else None,
                    )
                ]
            )
        )

    _with_store(config, job)
    click.echo(f"kill switch {state}" + (f": {reason}" if state == "on" else ""))

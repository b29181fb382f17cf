"""Concrete classes are chosen and wired here, once, from the settings."""

from __future__ import annotations

import os
from collections.abc import Mapping

from triggergate.alert_policy import AlertPolicy
from triggergate.clock import Clock, system_clock
from triggergate.errors import ConfigurationError
from triggergate.gate import Gate
from triggergate.identity import IdentityPolicy
from triggergate.outbox import Outbox
from triggergate.quota import Limit, parse_limits
from triggergate.registry import Context, backend_from_url, notifier_from_url, store_from_url
from triggergate.service import Policy, Service
from triggergate.settings import Settings, parse_duration


def context(settings: Settings, clock: Clock, environ: Mapping[str, str] | None = None) -> Context:
    return Context(
        clock=clock,
        environ=dict(os.environ if environ is None else environ),
        state_dir=settings.state_dir,
        # A write still queued when the request gives up must not run at all; a store
        # with bounded peeks answers them within the budget itself.
        options={
            **settings.pipeline_options,
            "write_timeout": settings.store_timeout * 0.9,
            "store_timeout": settings.store_timeout,
        },
        params=tuple(settings.params),
    )


def policy(settings: Settings) -> Policy:
    secret = settings.key_secret.get_secret_value().encode() if settings.key_secret else None
    return Policy(
        gate=Gate(
            limits=settings.client_limits,
            budget=settings.budget_limits,
            allow=Settings.networks(settings.allow),
            deny=Settings.networks(settings.deny),
            wider=tuple(
                (prefix, parse_limits(texts)) for prefix, texts in sorted(settings.ipv6_wider_caps.items())
            ),
            key_secret=secret,
        ),
        identity=IdentityPolicy(
            trusted_proxies=Settings.networks(settings.trusted_proxies),
            ipv4_prefix=settings.ipv4_prefix,
            ipv6_prefix=settings.ipv6_prefix,
            key_secret=secret,
            header=settings.forwarded_header,
        ),
        params=dict(settings.params),
        audit_retention=parse_duration(settings.audit_retention),
        idempotency_ttl=parse_duration(settings.idempotency_ttl),
        store_timeout=settings.store_timeout,
        backend_timeout=settings.backend_timeout,
        reconcile_after=settings.reconcile_after,
        coalesce=settings.coalesce,
    )


def alert_policy(settings: Settings, clock: Clock) -> AlertPolicy | None:
    """The digest/de-duplication policy, or None when neither setting is given."""
    if not (settings.alert_rate or settings.alert_dedup):
        return None
    rate = Limit.parse(settings.alert_rate) if settings.alert_rate else None
    return AlertPolicy(
        clock,
        rate=rate.count if rate else 0,
        window=rate.window if rate else 60.0,
        dedup=parse_duration(settings.alert_dedup) if settings.alert_dedup else 0.0,
    )


def build_service(settings: Settings, clock: Clock = system_clock) -> Service:
    """Every adapter built from its URL; raises ConfigurationError on the first bad one."""
    ctx = context(settings, clock)
    store = store_from_url(settings.store, ctx)
    backend = backend_from_url(settings.pipeline, ctx)
    notifiers = [notifier_from_url(url, ctx) for url in settings.notify]
    dead = notifier_from_url(settings.dead_letter, ctx, "dead_letter") if settings.dead_letter else None
    outbox = Outbox(
        store,
        notifiers,
        clock=clock,
        max_attempts=settings.outbox_attempts,
        dead_letter=dead,
        policy=alert_policy(settings, clock),
    )
    return Service(store, backend, outbox, policy(settings), clock)


def check_adapters(settings: Settings) -> list[str]:
    """Every adapter URL problem, one line each, without connecting to anything."""
    return check_urls(
        {
            "store": [settings.store],
            "pipeline": [settings.pipeline],
            "notify": settings.notify,
            "dead_letter": [settings.dead_letter],
        },
        context(settings, system_clock),
    )


def adapter_notes(settings: Settings) -> list[str]:
    """What the configured pipeline's choices cost (``Backend.notes``), for check-config."""
    try:
        return backend_from_url(settings.pipeline, context(settings, system_clock)).notes()
    except ConfigurationError:
        return []  # check_adapters reports it


def check_urls(urls: Mapping[str, list[str]], ctx: Context | None = None) -> list[str]:
    """Build each adapter from its URL (no connection); one line per problem."""
    ctx = ctx or Context()
    builders = {"store": store_from_url, "pipeline": backend_from_url}
    problems: list[str] = []
    for key, values in urls.items():
        for url in filter(None, values):
            try:
                if key in builders:
                    builders[key](url, ctx)
                else:
                    notifier_from_url(url, ctx, key)
            except ConfigurationError as exc:
                detail = str(exc).removeprefix(f"{key}: ")
                problems.append(f"{key} (TRIGGERGATE_{key.upper()}): {detail}")
    return problems

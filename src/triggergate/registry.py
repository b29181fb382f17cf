"""URL scheme -> adapter class, imported lazily, in one place.

A Lambda cold start or a light install imports only the adapters it uses.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from triggergate.clock import Clock, system_clock
from triggergate.errors import ConfigurationError

if TYPE_CHECKING:
    from triggergate.backends.base import Backend
    from triggergate.notifiers.base import Notifier
    from triggergate.stores.base import Store

STORES: dict[str, str] = {
    "memory": "triggergate.stores.memory:MemoryStore",
    "sqlite": "triggergate.stores.sqlite:SQLiteStore",
    "redis": "triggergate.stores.redis:RedisStore",
    "rediss": "triggergate.stores.redis:RedisStore",
    "postgresql": "triggergate.stores.postgres:PostgresStore",
    "postgres": "triggergate.stores.postgres:PostgresStore",
    "dynamodb": "triggergate.stores.dynamodb:DynamoDBStore",
}

BACKENDS: dict[str, str] = {
    "noop": "triggergate.backends.noop:NoopBackend",
    "command": "triggergate.backends.command:CommandBackend",
    "codepipeline": "triggergate.backends.codepipeline:CodePipelineBackend",
    "github": "triggergate.backends.github:GitHubBackend",
    "gitlab": "triggergate.backends.gitlab:GitLabBackend",
    "jenkins+https": "triggergate.backends.jenkins:JenkinsBackend",
    "jenkins+http": "triggergate.backends.jenkins:JenkinsBackend",
    "webhook+https": "triggergate.backends.webhook:WebhookBackend",
    "webhook+http": "triggergate.backends.webhook:WebhookBackend",
}

NOTIFIERS: dict[str, str] = {
    "log": "triggergate.notifiers.log:LogNotifier",
    "smtp": "triggergate.notifiers.smtp:SMTPNotifier",
    "smtps": "triggergate.notifiers.smtp:SMTPNotifier",
    "webhook+https": "triggergate.notifiers.webhook:WebhookNotifier",
    "webhook+http": "triggergate.notifiers.webhook:WebhookNotifier",
    "sns": "triggergate.notifiers.sns:SNSNotifier",
    "sqs": "triggergate.notifiers.sqs:SQSNotifier",
}


@dataclass(frozen=True)
class Context:
    """What an adapter may use besides its URL: the clock, secrets, a state folder.

    ``params`` names the allow-listed request parameters (``ref`` among them when it is
    allow-listed), so a backend can refuse at configuration time what its CI system
    would refuse at the first press.
    """

    clock: Clock = system_clock
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    state_dir: Path = Path(".")
    options: Mapping[str, Any] = field(default_factory=dict)
    params: tuple[str, ...] = ()

    def secret(self, name: str) -> str | None:
        """``TRIGGERGATE_<NAME>`` from the environment, or the file ``TRIGGERGATE_<NAME>_FILE`` names."""
        value = self.environ.get(f"TRIGGERGATE_{name}")
        if value:
            return value
        path = self.environ.get(f"TRIGGERGATE_{name}_FILE")
        if path:
            try:
                return Path(path).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigurationError(
                    f"TRIGGERGATE_{name}_FILE: cannot read {path!r} ({exc.strerror})",
                    key=f"TRIGGERGATE_{name}_FILE",
                    value=path,
                ) from exc
        return None


T = TypeVar("T")


def scheme_of(url: str) -> str:
    return urlsplit(url).scheme.lower()


def resolve(table: Mapping[str, str], url: str, family: str, key: str) -> type[Any]:
    """The class registered for ``url``'s scheme; a ConfigurationError names the known ones."""
    scheme = scheme_of(url)
    target = table.get(scheme)
    if target is None:
        known = ", ".join(f"{s}://" for s in sorted(table))
        raise ConfigurationError(
            f"{key}: unknown {family} scheme {scheme + '://' if scheme else repr(url)}; "
            f"known schemes: {known}",
            key=key,
            value=url,
        )
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(
            f"{key}: the {scheme}:// {family} needs an optional dependency that is not "
            f"installed ({exc.name}); install triggergate with its extra",
            key=key,
            value=url,
        ) from exc
    cls: type[Any] = getattr(module, class_name)
    return cls


def store_from_url(url: str, ctx: Context) -> Store:
    cls = resolve(STORES, url, "store", "store")
    store: Store = cls.from_url(url, ctx)
    return store


def backend_from_url(url: str, ctx: Context) -> Backend:
    cls = resolve(BACKENDS, url, "pipeline", "pipeline")
    backend: Backend = cls.from_url(url, ctx)
    return backend


def notifier_from_url(url: str, ctx: Context, key: str = "notify") -> Notifier:
    cls = resolve(NOTIFIERS, url, "notifier", key)
    notifier: Notifier = cls.from_url(url, ctx)
    return notifier

"""What every AWS adapter shares: its URL's region and endpoint, and a client that gives up fast."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from triggergate.errors import ConfigurationError
from triggergate.registry import Context

COMMON = ("endpoint_url", "region")


@dataclass(frozen=True)
class AwsUrl:
    """``scheme://LOCATION?region=R&endpoint_url=U&...``: the resource, its region, the rest."""

    location: str
    region: str
    endpoint_url: str | None
    query: dict[str, str]


def parse_url(url: str, ctx: Context, key: str, allowed: Iterable[str] = ()) -> AwsUrl:
    """Split an adapter URL; unknown parameters, a bad endpoint or no region are errors.

    The region falls back to ``AWS_REGION`` / ``AWS_DEFAULT_REGION`` (Lambda sets the first).
    ``endpoint_url`` is for local engines (moto, dynalite) and must be http(s).
    """
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    known = sorted({*COMMON, *allowed})
    unknown = sorted(set(query) - set(known))
    region = (
        query.get("region") or ctx.environ.get("AWS_REGION") or ctx.environ.get("AWS_DEFAULT_REGION") or ""
    )
    endpoint = query.get("endpoint_url") or None
    problem = (
        f"unknown parameter(s) {', '.join(unknown)}; allowed: {', '.join(known)}"
        if unknown
        else "set ?region= or AWS_REGION"
        if not region
        else "endpoint_url must start with http:// or https://"
        if endpoint and not endpoint.startswith(("http://", "https://"))
        else ""
    )
    if problem:
        raise ConfigurationError(f"{key}: {problem}", key=key, value=url)
    return AwsUrl(parts.netloc + parts.path, region, endpoint, query)


def error_code(exc: BaseException) -> str:
    """A short, non-secret name for a failure: the AWS error code, never its message."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code") or "error")
    return type(exc).__name__


def make_client(service: str, where: AwsUrl, *, timeout: float, attempts: int, pool: int = 10) -> Any:
    """A boto3 client with short timeouts and ``attempts`` tries in all (botocore's own retries).

    boto3 is imported here, lazily: deployments that use no AWS adapter never load it.
    """
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=timeout,
        read_timeout=timeout,
        retries={"total_max_attempts": attempts, "mode": "standard"},
        max_pool_connections=pool,
    )
    return boto3.session.Session().client(
        service,  # type: ignore[call-overload]
        region_name=where.region,
        endpoint_url=where.endpoint_url,
        config=config,
    )

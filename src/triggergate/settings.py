"""Configuration: one TOML file plus ``TRIGGERGATE_*`` environment overrides.

The environment wins over the file. Secrets (admin token, key secret, adapter
passwords and tokens) come only from the environment or a file named by
``TRIGGERGATE_<NAME>_FILE``, never from the TOML file.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from triggergate.errors import ConfigurationError
from triggergate.quota import Limit, parse_limits
from triggergate.tokens import token_problem

SECRET_KEYS = ("admin_token", "key_secret")
Networks = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
# Who may read /metrics without the admin token: loopback and the private ranges
# (RFC 1918, RFC 4193 unique local), where a Prometheus scraper usually sits.
METRICS_ALLOW = ["127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"]


def _split(value: Any) -> Any:
    """Comma-separated environment values become lists; lists from TOML pass through."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def parse_duration(text: str) -> int:
    """``90s``, ``10m``, ``24h``, ``7d``, ``2w`` -> seconds."""
    return Limit.parse(f"1/{text}").window


def _check_limits(texts: list[str]) -> None:
    """Every limit parses; pydantic wants a ValueError naming what is wrong."""
    for text in texts:  # Limit.parse, not parse_limits: an empty entry is an error here
        try:
            Limit.parse(text)
        except ConfigurationError as exc:
            raise ValueError(str(exc)) from exc


class ParamSpec(BaseModel):
    """One allow-listed request parameter; anything not listed is refused with 400."""

    model_config = ConfigDict(extra="forbid")

    pattern: str = r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$"
    choices: list[str] = Field(default_factory=list)
    default: str | None = None
    required: bool = False
    label: str = ""

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression ({exc})") from exc
        return value


class Settings(BaseSettings):
    """Every setting, its default and its environment variable (``TRIGGERGATE_<KEY>``)."""

    # Inputs stay out of the error's own text (a traceback would print a secret's
    # value); describe_errors shows every non-secret value itself.
    model_config = SettingsConfigDict(env_prefix="TRIGGERGATE_", extra="forbid", hide_input_in_errors=True)

    store: str = "sqlite:///./triggergate.db"
    pipeline: str = "noop://"
    notify: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["log://"])
    dead_letter: str = ""
    limits: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["3/7d"])
    budget: Annotated[list[str], NoDecode] = Field(default_factory=list)
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    forwarded_header: Literal["x-forwarded-for", "forwarded"] = "x-forwarded-for"
    ipv4_prefix: int = Field(32, ge=8, le=32)
    ipv6_prefix: int = Field(64, ge=16, le=128)
    ipv6_wider_caps: dict[int, list[str]] = Field(default_factory=dict)
    allow: Annotated[list[str], NoDecode] = Field(default_factory=list)
    deny: Annotated[list[str], NoDecode] = Field(default_factory=list)
    params: dict[str, ParamSpec] = Field(default_factory=dict)
    pipeline_options: dict[str, Any] = Field(default_factory=dict)
    coalesce: bool = True
    state_dir: Path = Path("./triggergate-state")
    audit_retention: str = "400d"
    idempotency_ttl: str = "24h"
    store_timeout: float = Field(0.8, gt=0, le=5)
    backend_timeout: float = Field(30.0, gt=0, le=600)
    reconcile_after: float = Field(120.0, gt=0)
    outbox_attempts: int = Field(5, ge=1, le=100)
    alert_rate: str = ""  # e.g. "10/1m": accepted alerts beyond it fold into a digest
    alert_dedup: str = ""  # e.g. "10m": identical alerts within it are sent once
    title: str = "Deploy"
    description: str = "Start the pipeline. Each visitor may press a limited number of times."
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    admin_token: SecretStr | None = None
    admin_login_limits: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["10/1h"])
    admin_login_budget: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["100/1h"])
    metrics_allow: Annotated[list[str], NoDecode] = Field(default_factory=lambda: list(METRICS_ALLOW))
    key_secret: SecretStr | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment wins over the file (passed as init kwargs).
        return (env_settings, init_settings)

    _split_lists = field_validator(
        "notify",
        "limits",
        "budget",
        "trusted_proxies",
        "allow",
        "deny",
        "admin_login_limits",
        "admin_login_budget",
        "metrics_allow",
        mode="before",
    )(_split)

    @field_validator("limits", "budget", "admin_login_limits", "admin_login_budget")
    @classmethod
    def _limits_parse(cls, value: list[str]) -> list[str]:
        _check_limits(value)
        return value

    @field_validator("limits", "admin_login_limits", "admin_login_budget")
    @classmethod
    def _limits_present(cls, value: list[str], info: ValidationInfo) -> list[str]:
        if not value:
            example = "3/7d" if info.field_name == "limits" else "10/1h"
            raise ValueError(f"at least one limit is required, e.g. {example}")
        return value

    @field_validator("admin_token", mode="before")
    @classmethod
    def _admin_token_strong(cls, value: Any) -> Any:
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        if text == "":  # an empty variable means "not set": no operator view
            return None
        if isinstance(text, str):
            problem = token_problem(text)
            if problem:
                raise ValueError(problem)
        return value

    @field_validator("ipv6_wider_caps")
    @classmethod
    def _wider_caps(cls, value: dict[int, list[str]]) -> dict[int, list[str]]:
        for prefix, texts in value.items():
            if not 16 <= prefix <= 128:
                raise ValueError(f"prefix {prefix} must be between 16 and 128, e.g. 56 or 48")
            if not texts:
                raise ValueError(f"prefix {prefix} needs at least one limit, e.g. ['10/7d']")
            _check_limits(texts)
        return value

    @field_validator("trusted_proxies", "allow", "deny", "metrics_allow")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        for text in value:
            try:
                ipaddress.ip_network(text, strict=False)
            except ValueError as exc:
                raise ValueError(f"{text!r} is not a CIDR such as 10.0.0.0/8 or ::1/128") from exc
        return value

    @field_validator("audit_retention", "idempotency_ttl")
    @classmethod
    def _duration(cls, value: str) -> str:
        try:
            parse_duration(value)
        except ConfigurationError as exc:
            raise ValueError(f"{value!r} is not a duration such as 90s, 10m, 24h, 7d, 2w") from exc
        return value

    @field_validator("alert_rate", "alert_dedup")
    @classmethod
    def _alert_policy(cls, value: str, info: ValidationInfo) -> str:
        if value:
            text = value if info.field_name == "alert_rate" else f"1/{value}"
            try:
                Limit.parse(text)
            except ConfigurationError as exc:
                raise ValueError(f"{value!r}: use e.g. 10/1m (rate) or 10m (window)") from exc
        return value

    @model_validator(mode="after")
    def _reconcile_after_in_flight_starts(self) -> Settings:
        # A reservation younger than this may still be starting in some process; the
        # reconciler must never settle or refund one while its start is in flight.
        if self.reconcile_after <= self.backend_timeout + 5:
            raise ValueError(
                f"reconcile_after ({self.reconcile_after:g}) must exceed backend_timeout "
                f"({self.backend_timeout:g}) by more than 5 seconds"
            )
        return self

    @field_validator("params")
    @classmethod
    def _param_names(cls, value: dict[str, ParamSpec]) -> dict[str, ParamSpec]:
        for name in value:
            if not re.fullmatch(r"[a-z][a-z0-9_]{0,31}", name):
                raise ValueError(f"parameter name {name!r}: use lowercase letters, digits, _")
        return value

    # -- derived views -------------------------------------------------------------------

    @property
    def client_limits(self) -> tuple[Limit, ...]:
        return parse_limits(self.limits)

    @property
    def budget_limits(self) -> tuple[Limit, ...]:
        return parse_limits(self.budget)

    @property
    def admin_login_client_limits(self) -> tuple[Limit, ...]:
        return parse_limits(self.admin_login_limits)

    @property
    def admin_login_global_limits(self) -> tuple[Limit, ...]:
        return parse_limits(self.admin_login_budget)

    @staticmethod
    def networks(texts: list[str]) -> Networks:
        return tuple(ipaddress.ip_network(t, strict=False) for t in texts)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError as exc:
        raise ConfigurationError(f"config: file {str(path)!r} not found", key="config") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"config: {path.name} is not valid TOML ({exc})", key="config") from exc
    for key in SECRET_KEYS:
        if key in data:
            raise ConfigurationError(
                f"{key}: secrets are not read from the config file; set "
                f"TRIGGERGATE_{key.upper()} or TRIGGERGATE_{key.upper()}_FILE",
                key=key,
            )
    return data


def _secret_files(environ: Mapping[str, str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for key in SECRET_KEYS:
        path = environ.get(f"TRIGGERGATE_{key.upper()}_FILE")
        if path and not environ.get(f"TRIGGERGATE_{key.upper()}"):
            try:
                found[key] = Path(path).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigurationError(
                    f"TRIGGERGATE_{key.upper()}_FILE: cannot read {path!r} ({exc.strerror})",
                    key=key,
                ) from exc
    return found


def describe_errors(error: ValidationError) -> list[str]:
    """One line per problem: the key, the value given and what is allowed."""
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "config"
        top = str(item["loc"][0]) if item["loc"] else key
        value = item.get("input")
        shown = "<secret>" if top in SECRET_KEYS else repr(value)
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key; see the configuration reference in README.md"
        lines.append(f"{key} (TRIGGERGATE_{top.upper()}): {shown}: {message}")
    return lines


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Load the file (``path`` or ``TRIGGERGATE_CONFIG``), then apply the environment.

    Raises ConfigurationError whose message lists every problem, one per line.
    """
    config = path or os.environ.get("TRIGGERGATE_CONFIG")
    data = _read_toml(Path(config)) if config else {}
    data.update(_secret_files(os.environ))
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigurationError("\n".join(describe_errors(exc)), key="config") from exc


def raw_adapter_urls(path: str | os.PathLike[str] | None = None) -> dict[str, list[str]]:
    """The adapter URLs as given (file, then environment), even when other keys are invalid,
    so ``check-config`` can report adapter problems beside validation errors."""
    config = path or os.environ.get("TRIGGERGATE_CONFIG")
    try:
        data = _read_toml(Path(config)) if config else {}
    except ConfigurationError:
        data = {}
    urls: dict[str, list[str]] = {}
    for key in ("store", "pipeline", "notify", "dead_letter"):
        value = os.environ.get(f"TRIGGERGATE_{key.upper()}", data.get(key))
        if value:
            urls[key] = [str(v) for v in (_split(value) if isinstance(value, str) else value)]
    return urls

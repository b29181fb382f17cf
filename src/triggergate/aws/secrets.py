"""Secrets from AWS Systems Manager Parameter Store, read once when the process starts.

``TRIGGERGATE_<NAME>_SSM`` names a parameter (a SecureString, or a Secrets Manager
secret through Parameter Store's ``/aws/reference/secretsmanager/<secret-id>``
path); its value becomes ``TRIGGERGATE_<NAME>``, where the settings and the
adapters read secrets, as ``TRIGGERGATE_<NAME>_FILE`` does for a file. Works for
every secret name (``ADMIN_TOKEN``, ``KEY_SECRET``, ``SMTP_PASSWORD``, ...).

On Lambda this runs in the init phase, so no request waits for Parameter Store
and the execution role needs ``ssm:GetParameter`` on exactly those parameters
(the template grants that). The value is never logged; errors name the
variable, the parameter and AWS's error code.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from triggergate.aws.clients import AwsUrl, error_code, make_client
from triggergate.errors import ConfigurationError

PREFIX, SUFFIX = "TRIGGERGATE_", "_SSM"


def ssm_names(environ: MutableMapping[str, str]) -> dict[str, str]:
    """``TRIGGERGATE_<NAME>`` -> the parameter that holds it, for every non-empty ``_SSM`` variable."""
    return {
        key.removesuffix(SUFFIX): value.strip()
        for key, value in environ.items()
        if key.startswith(PREFIX) and key.endswith(SUFFIX) and value.strip()
    }


def load_ssm_secrets(environ: MutableMapping[str, str], client: Any = None) -> list[str]:
    """Read every named parameter into ``environ``; return the variables set.

    Raises ConfigurationError when a parameter cannot be read, or when the secret is
    also given directly (two sources for one secret is a mistake, not a precedence).
    """
    wanted = ssm_names(environ)
    if not wanted:
        return []
    for name in wanted:
        if environ.get(name) or environ.get(f"{name}_FILE"):
            raise ConfigurationError(
                f"{name}{SUFFIX}: {name} is also set; give the secret one way only", key=f"{name}{SUFFIX}"
            )
    if client is None:
        region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or ""
        if not region:
            raise ConfigurationError(f"{next(iter(wanted))}{SUFFIX}: set AWS_REGION", key="AWS_REGION")
        # The endpoint comes from botocore's own AWS_ENDPOINT_URL_SSM when set (local engines).
        client = make_client("ssm", AwsUrl("", region, None, {}), timeout=3.0, attempts=3)
    for name, parameter in wanted.items():
        try:
            answer = client.get_parameter(Name=parameter, WithDecryption=True)
        except Exception as exc:
            raise ConfigurationError(
                f"{name}{SUFFIX}: cannot read parameter {parameter!r} ({error_code(exc)})",
                key=f"{name}{SUFFIX}",
                value=parameter,
            ) from exc
        environ[name] = str(answer["Parameter"]["Value"])
    return sorted(wanted)

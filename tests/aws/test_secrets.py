"""Secrets named by ``TRIGGERGATE_<NAME>_SSM``, read from Parameter Store (moto) once at start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.servers.aws import FAKE_ENV, REGION
from triggergate.aws.secrets import load_ssm_secrets
from triggergate.errors import ConfigurationError
from triggergate.identity import IdentityPolicy, resolve_client

pytestmark = pytest.mark.dynamodb


@pytest.fixture
def ssm(moto: str) -> Any:
    return boto3.client("ssm", region_name=REGION, endpoint_url=moto)


def test_each_named_parameter_becomes_its_secret(ssm: Any, moto: str) -> None:
    """Every non-empty _SSM variable is read (SecureString, decrypted) into its secret's
    variable; empty ones (the template's default) are ignored."""
    ssm.put_parameter(Name="/tg/admin", Value="admin-value", Type="SecureString")
    ssm.put_parameter(Name="/tg/smtp", Value="smtp-value", Type="SecureString")
    environ = {
        "AWS_REGION": REGION,
        "AWS_ENDPOINT_URL_SSM": moto,
        "TRIGGERGATE_ADMIN_TOKEN_SSM": "/tg/admin",
        "TRIGGERGATE_SMTP_PASSWORD_SSM": "/tg/smtp",
        "TRIGGERGATE_KEY_SECRET_SSM": "",
    }
    os.environ["AWS_ENDPOINT_URL_SSM"] = moto  # botocore reads the endpoint from the process
    try:
        assert load_ssm_secrets(environ) == ["TRIGGERGATE_ADMIN_TOKEN", "TRIGGERGATE_SMTP_PASSWORD"]
    finally:
        del os.environ["AWS_ENDPOINT_URL_SSM"]
    assert environ["TRIGGERGATE_ADMIN_TOKEN"] == "admin-value"
    assert environ["TRIGGERGATE_SMTP_PASSWORD"] == "smtp-value"
    assert "TRIGGERGATE_KEY_SECRET" not in environ


def test_a_secret_given_twice_is_a_configuration_error() -> None:
    """The secret set directly (or as a file) and by parameter: refused, naming both, before
    any call to AWS."""
    for direct in ("TRIGGERGATE_ADMIN_TOKEN", "TRIGGERGATE_ADMIN_TOKEN_FILE"):
        environ = {"TRIGGERGATE_ADMIN_TOKEN_SSM": "/tg/admin", direct: "x"}
        with pytest.raises(ConfigurationError) as caught:
            load_ssm_secrets(environ, client=object())
        assert "TRIGGERGATE_ADMIN_TOKEN_SSM" in str(caught.value)
        assert "one way only" in str(caught.value)


def test_the_cli_reads_ssm_secrets_before_its_settings(ssm: Any, moto: str, tmp_path: Path) -> None:
    """`triggergate quota show` with the key secret in Parameter Store keys the client by the
    HMAC under that secret, as the server and the Lambda do."""
    ssm.put_parameter(Name="/tg/key", Value="key-value", Type="SecureString")
    env = {
        "PATH": os.environ["PATH"],
        **FAKE_ENV,
        "AWS_ENDPOINT_URL_SSM": moto,
        "TRIGGERGATE_STORE": f"sqlite:///{tmp_path}/gate.db",
        "TRIGGERGATE_KEY_SECRET_SSM": "/tg/key",
    }
    done = subprocess.run(
        [sys.executable, "-m", "triggergate", "quota", "show", "198.51.100.90"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    expected = resolve_client("198.51.100.90", [], IdentityPolicy(key_secret=b"key-value")).key
    assert f"c:{expected}" in json.dumps(json.loads(done.stdout))

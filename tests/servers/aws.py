"""Local AWS for tests: moto in server mode and dynalite, both on 127.0.0.1 free ports.

Fake credentials only, and every client gets an ``endpoint_url`` on 127.0.0.1,
so nothing here can reach real AWS.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

REGION = "us-east-1"
FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}
DYNALITE = Path(__file__).resolve().parents[2] / "node_modules" / ".bin" / "dynalite"


@contextmanager
def fake_aws_env() -> Iterator[None]:
    """Fake credentials and no profile, restored afterwards."""
    saved = {k: os.environ.get(k) for k in [*FAKE_ENV, "AWS_PROFILE"]}
    os.environ.update(FAKE_ENV)
    os.environ.pop("AWS_PROFILE", None)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def moto_server() -> Iterator[str]:
    """A moto server thread; yields its base URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def dynalite_server() -> Iterator[str]:
    """A dynalite process (in-memory LevelDB) on 127.0.0.1, stopped by its PID."""
    with dynalite_process() as (url, _):
        yield url


@contextmanager
def dynalite_process() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A dynalite process of the caller's own (to pause or kill); its URL and the process."""
    node = shutil.which("node")
    if node is None or not DYNALITE.exists():
        pytest.fail(f"dynalite is missing: run `npm ci` in {DYNALITE.parents[2]} (make test does)")
    port = _free_port()
    proc = subprocess.Popen(
        [
            node,
            str(DYNALITE.resolve()),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--createTableMs",
            "20",
            "--deleteTableMs",
            "20",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            pytest.fail("dynalite did not start within 10 s")
        yield f"http://127.0.0.1:{port}", proc
    finally:
        with suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)  # a paused dynalite cannot act on SIGTERM
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """One moto server for the session; tests take ``moto`` to get it reset."""
    with fake_aws_env(), moto_server() as url:
        yield url


@pytest.fixture
def moto(moto_endpoint: str) -> str:
    """The moto server's URL, emptied before the test."""
    httpx.post(f"{moto_endpoint}/moto-api/reset").raise_for_status()
    return moto_endpoint


_SHARED: dict[str, str] = {}


def shared_dynalite(config: pytest.Config) -> str:
    """One dynalite server (and fake credentials) for the whole session, stopped at its end."""
    if "dynalite" not in _SHARED:
        stack = ExitStack()
        stack.enter_context(fake_aws_env())
        _SHARED["dynalite"] = stack.enter_context(dynalite_server())
        config.add_cleanup(stack.close)
        config.add_cleanup(_SHARED.clear)
    return _SHARED["dynalite"]


@pytest.fixture
def dynalite(request: pytest.FixtureRequest) -> str:
    """The session's dynalite URL; tests use fresh table names."""
    return shared_dynalite(request.config)


TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "codepipeline.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}


def create_pipeline(endpoint: str, name: str = "deploy") -> Any:
    """A two-stage pipeline on moto (a role trusting CodePipeline is required); its client."""
    iam = boto3.client("iam", region_name=REGION, endpoint_url=endpoint)
    role = iam.create_role(RoleName=f"{name}-role", AssumeRolePolicyDocument=json.dumps(TRUST))
    source_type = {"category": "Source", "owner": "AWS", "provider": "S3", "version": "1"}
    source = {
        "name": "Fetch",
        "actionTypeId": source_type,
        "configuration": {"S3Bucket": "b", "S3ObjectKey": "k"},
        "outputArtifacts": [{"name": "out"}],
    }
    build = {
        "name": "Make",
        "actionTypeId": {**source_type, "category": "Build"},
        "configuration": {},
        "inputArtifacts": [{"name": "out"}],
    }
    client = boto3.client("codepipeline", region_name=REGION, endpoint_url=endpoint)
    client.create_pipeline(
        pipeline={
            "name": name,
            "roleArn": role["Role"]["Arn"],
            "artifactStore": {"type": "S3", "location": "artifacts"},
            "stages": [{"name": "Source", "actions": [source]}, {"name": "Build", "actions": [build]}],
            "variables": [{"name": "TARGET"}, {"name": "TRIGGERGATE_REQUEST_ID"}],
        }
    )
    return client

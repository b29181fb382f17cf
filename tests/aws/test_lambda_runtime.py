"""The Lambda handler in processes of its own, as Lambda runs it: init once, then one event at a time.

Each container is a runtime process (tests/servers/lambda_runtime.py) with the
template's environment, the store on dynalite (atomic conditional writes), the
pipeline, alerts and secrets on moto, driven with AWS's own published API Gateway
samples (tests/aws/events/aws/). Cold: a container's first event after init;
warm: every later one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.aws.samples import HTTP_SAMPLES, http_event
from tests.servers._process import require_binary, stop_pid
from tests.servers.aws import FAKE_ENV, REGION, create_pipeline
from tests.servers.lambda_runtime import LambdaProcess, lambda_environment
from triggergate.aws.dynamodb_schema import create_table
from triggergate.identity import IdentityPolicy, resolve_client

pytestmark = [pytest.mark.dynamodb, pytest.mark.slow]

HANDLER = "triggergate.aws.lambda_handler.handler"
SAMPLES = list(HTTP_SAMPLES)


@dataclass
class Stack:
    """What one test's containers use: their environment and the engines behind it."""

    env: dict[str, str]
    table: str
    dynalite: str
    moto: str

    def executions(self) -> int:
        client = boto3.client("codepipeline", region_name=REGION, endpoint_url=self.moto)
        return len(client.list_pipeline_executions(pipelineName="deploy")["pipelineExecutionSummaries"])


def template_env(store: str, moto: str, state: Path) -> dict[str, str]:
    """The variables deploy/aws/template.yaml gives the API function, aimed at local engines,
    plus the ones Lambda itself defines."""
    sns = boto3.client("sns", region_name=REGION, endpoint_url=moto)
    topic = sns.create_topic(Name="alerts")["TopicArn"]
    return {
        "PATH": os.environ["PATH"],
        **FAKE_ENV,
        **lambda_environment(),
        "TRIGGERGATE_STORE": store,
        "TRIGGERGATE_PIPELINE": (
            f"codepipeline://deploy?endpoint_url={moto}&request_variable=TRIGGERGATE_REQUEST_ID"
        ),
        "TRIGGERGATE_NOTIFY": f"log://,sns://{topic}?endpoint_url={moto}",
        "TRIGGERGATE_DEAD_LETTER": f"sqs://sqs.{REGION}.amazonaws.com/123456789012/dlq?endpoint_url={moto}",
        "TRIGGERGATE_LIMITS": "3/7d",
        "TRIGGERGATE_BUDGET": "",
        "TRIGGERGATE_TRUSTED_PROXIES": "",
        "TRIGGERGATE_STATE_DIR": str(state),
    }


@pytest.fixture
def stack(dynalite: str, moto: str, tmp_path: Path) -> Stack:
    table = f"gate-{uuid.uuid4().hex[:10]}"
    create_table(boto3.client("dynamodb", region_name=REGION, endpoint_url=dynalite), table)
    create_pipeline(moto)
    store = f"dynamodb://{table}?endpoint_url={dynalite}&ttl_attribute=ttl"
    return Stack(template_env(store, moto, tmp_path / "state"), table, dynalite, moto)


@contextlib.contextmanager
def containers(env: dict[str, str], count: int = 1, **options: Any) -> Iterator[list[LambdaProcess]]:
    """``count`` execution environments, started together, each past its init phase."""
    started = [LambdaProcess(HANDLER, env, **options) for _ in range(count)]
    try:
        for box in started:
            box.wait_init(timeout=180)
        yield started
    finally:
        for box in started:
            box.close()


@contextlib.contextmanager
def busy_loops(taskset: str, cpu: str, count: int) -> Iterator[None]:
    """``count`` processes spinning on ``cpu``: whatever else is pinned there gets a share."""
    loops = [
        subprocess.Popen([taskset, "-c", cpu, sys.executable, "-c", "while True: pass"]) for _ in range(count)
    ]
    try:
        yield
    finally:
        for loop in loops:
            stop_pid(loop.pid, signal.SIGKILL)
            loop.wait(timeout=5)


def test_cold_container_starved_of_cpu_accepts_its_first_press(stack: Stack) -> None:
    """Four fresh containers, each pinned to one core beside three busy loops (a quarter of a
    CPU, less than the third a 512 MB function gets): every first press answers 202, because
    the AWS clients were built during init, not inside the press's 0.8 s store deadline."""
    taskset = require_binary("taskset")
    codes = []
    with busy_loops(taskset, "0", 3):
        for i in range(4):
            with containers(stack.env, cpus="0", taskset=taskset) as [box]:
                event = http_event(SAMPLES[i % 4], "POST", "/trigger", source_ip=f"198.51.100.{i + 1}")
                codes.append(box.invoke(event).status)
    assert codes == [202] * 4
    assert stack.executions() == 4


def test_thirty_containers_admit_exactly_three_presses_cold_and_warm(stack: Stack) -> None:
    """30 containers press at once from one sourceIp (the four AWS samples in turn), on their
    cold first invocation and on two warm rounds: each round starts exactly 3 runs, and every
    other press is refused (429) or joins a run already started, never starts one."""
    # 30 processes share 2 cores here: this test is about exactness, so the deadline is generous.
    env = {
        **stack.env,
        "TRIGGERGATE_STORE": f"{stack.env['TRIGGERGATE_STORE']}&timeout=5",
        "TRIGGERGATE_STORE_TIMEOUT": "5",
    }
    with containers(env, 30) as boxes:
        for round_, ip in enumerate(("198.51.100.7", "198.51.100.8", "198.51.100.9")):
            for i, box in enumerate(boxes):
                box.send(http_event(SAMPLES[i % 4], "POST", "/trigger", source_ip=ip))
            answers = [box.receive(timeout=180) for box in boxes]
            kinds = Counter(
                "started" if a.status == 202 and a.json()["status"] != "joined" else str(a.status)
                for a in answers
            )
            assert kinds["started"] == 3, (round_, kinds)
            assert set(kinds) <= {"started", "202", "429"}, (round_, kinds)
            assert stack.executions() == 3 * (round_ + 1)


def test_secrets_named_by_ssm_variables_are_read_once_at_init(stack: Stack) -> None:
    """TRIGGERGATE_KEY_SECRET_SSM names a SecureString: the quota key is the HMAC under that
    secret, and it stays so after the parameter is deleted (read at init, never per request)."""
    ssm = boto3.client("ssm", region_name=REGION, endpoint_url=stack.moto)
    ssm.put_parameter(Name="/triggergate/key-secret", Value="s3cr3t-value", Type="SecureString")
    env = {
        **stack.env,
        "TRIGGERGATE_KEY_SECRET_SSM": "/triggergate/key-secret",
        "AWS_ENDPOINT_URL_SSM": stack.moto,
    }
    expected = resolve_client("198.51.100.40", [], IdentityPolicy(key_secret=b"s3cr3t-value")).key
    assert expected.startswith("h:")
    with containers(env) as [box]:
        first = box.invoke(http_event("sam-http", "GET", "/quota", source_ip="198.51.100.40"))
        ssm.delete_parameter(Name="/triggergate/key-secret")
        second = box.invoke(http_event("sam-rest", "GET", "/quota", source_ip="198.51.100.40"))
    assert first.json()["client"] == expected
    assert second.json()["client"] == expected


def test_unreadable_ssm_secret_fails_the_init_naming_the_variable(stack: Stack) -> None:
    """A missing parameter fails Lambda's init (it reports it and retries on the next event),
    naming the variable, the parameter and AWS's error code."""
    env = {
        **stack.env,
        "TRIGGERGATE_ADMIN_TOKEN_SSM": "/triggergate/absent",
        "AWS_ENDPOINT_URL_SSM": stack.moto,
    }
    box = LambdaProcess(HANDLER, env)
    try:
        with pytest.raises(RuntimeError) as failed:
            box.wait_init(timeout=120)
    finally:
        box.close()
    message = str(failed.value)
    assert "TRIGGERGATE_ADMIN_TOKEN_SSM" in message
    assert "/triggergate/absent" in message
    assert "ParameterNotFound" in message


def test_a_denial_writes_no_log_line_in_a_warm_container(stack: Stack, tmp_path: Path) -> None:
    """Once a client is spent, its next presses (the spent-key cache, then a store read in a
    fresh container) write nothing to the function's log: CloudWatch bills every line."""
    log = tmp_path / "function.log"
    with log.open("w") as sink, containers(stack.env, stderr=sink) as [box]:
        for _ in range(3):
            assert (
                box.invoke(http_event("sam-http", "POST", "/trigger", source_ip="198.51.100.50")).status
                == 202
            )
        sink.flush()
        before = log.stat().st_size
        codes = [
            box.invoke(http_event(SAMPLES[i % 4], "POST", "/trigger", source_ip="198.51.100.50")).status
            for i in range(20)
        ]
        sink.flush()
        after = log.stat().st_size
    assert codes == [429] * 20
    assert after == before, log.read_text()[before:]

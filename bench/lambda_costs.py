"""``python -m bench.lambda_costs``: what a Lambda invocation of the API function lasts.

Lambda bills an invocation by its duration (rounded up to the millisecond) times
its memory, and gives a function CPU in proportion to its memory: about a third
of a vCPU at 512 MB, a sixth at 256 MB (1,769 MB is one vCPU, AWS Lambda
Developer Guide, "Configuring Lambda function memory"). This runs the handler as
Lambda does (tests/servers/lambda_runtime.py: init once, then one event at a
time) pinned to core 0 beside busy loops that leave it that share, with the
store on dynalite and the AWS APIs on moto, and reports per kind of request the
median and 95th percentile of the handler's duration, the init time and the
peak memory (VmHWM) of the process. docs/aws.md puts these numbers into its cost
arithmetic.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
from tests.aws.samples import http_event
from tests.servers.aws import FAKE_ENV, REGION, create_pipeline, dynalite_server, fake_aws_env, moto_server
from tests.servers.blackhole import blackhole
from tests.servers.lambda_runtime import LambdaProcess, lambda_environment

from triggergate.aws.dynamodb_schema import create_table

HANDLER = "triggergate.aws.lambda_handler.handler"
SHARES = {512: 2, 256: 5}  # memory -> busy loops beside the handler on its core (1/3, 1/6 CPU)


@contextlib.contextmanager
def busy(count: int) -> Iterator[None]:
    loops = [
        subprocess.Popen(["taskset", "-c", "0", sys.executable, "-c", "while True: pass"])
        for _ in range(count)
    ]
    try:
        yield
    finally:
        for loop in loops:
            loop.send_signal(signal.SIGKILL)
            loop.wait()


def _stats(durations: list[float]) -> dict[str, float]:
    ordered = sorted(durations)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return {"n": len(ordered), "p50_ms": statistics.median(ordered) * 1000, "p95_ms": p95 * 1000}


def _peak_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def measure(memory: int, env: dict[str, str], outage_env: dict[str, str], rounds: int) -> dict[str, Any]:
    """One memory size: accepted, denied (cache and store read), outage, init and peak memory."""
    found: dict[str, Any] = {"memory_mb": memory}
    env = {**env, **lambda_environment(memory_mb=memory)}
    with busy(SHARES[memory]):
        spender = LambdaProcess(HANDLER, env, cpus="0", taskset="taskset")
        found["init_s"] = spender.wait_init(timeout=300)  # one init at a time, as on Lambda
        found["init_cpu_s"] = spender.init_cpu
        reader = LambdaProcess(HANDLER, env, cpus="0", taskset="taskset")
        try:
            reader.wait_init(timeout=300)
            clients = [f"198.51.{100 + i // 250}.{i % 250 + 1}" for i in range(rounds)]
            accepted, codes = [], Counter[int]()
            for ip in clients:  # spend every client: three accepted presses each
                while codes[202] < 3 * (clients.index(ip) + 1) and codes[503] < 3 * len(clients):
                    answer = spender.invoke(http_event("sam-http", "POST", "/trigger", source_ip=ip))
                    codes[answer.status] += 1
                    if answer.status == 202:
                        accepted.append(answer.duration)
            found["accept_presses"] = dict(codes)  # any 503: the press failed closed, too slow
            cached = [
                spender.invoke(http_event("sam-http", "POST", "/trigger", source_ip=ip)).duration
                for ip in clients
                for _ in range(5)
            ]
            read = []
            for ip in clients:  # a container that never saw these clients reads the store once each
                answer = reader.invoke(http_event("sam-http", "POST", "/trigger", source_ip=ip))
                assert answer.status == 429, answer.result
                read.append(answer.duration)
            found["accepted"] = _stats(accepted)
            found["denied_cached"] = _stats(cached)
            found["denied_store_read"] = _stats(read)
            found["peak_rss_mib"] = max(_peak_kib(spender.proc.pid), _peak_kib(reader.proc.pid)) / 1024
        finally:
            spender.close()
            reader.close()
        down = LambdaProcess(
            HANDLER, {**outage_env, **lambda_environment(memory_mb=memory)}, cpus="0", taskset="taskset"
        )
        try:
            down.wait_init(timeout=300)
            outage = [
                down.invoke(http_event("sam-http", "POST", "/trigger", source_ip="198.51.100.250")).duration
                for _ in range(5)
            ]
            found["outage_503"] = _stats(outage)
        finally:
            down.close()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20, help="spent clients per memory size")
    parser.add_argument("--memory", type=int, nargs="*", default=sorted(SHARES, reverse=True))
    args = parser.parse_args()
    with fake_aws_env(), dynalite_server() as dynalite, moto_server() as moto, blackhole() as hole:
        create_pipeline(moto)
        topic = boto3.client("sns", region_name=REGION, endpoint_url=moto).create_topic(Name="alerts")[
            "TopicArn"
        ]
        results = []
        for memory in args.memory:
            table = f"gate-{uuid.uuid4().hex[:8]}"
            create_table(boto3.client("dynamodb", region_name=REGION, endpoint_url=dynalite), table)
            state = tempfile.mkdtemp(prefix="tg-bench-")
            base = {
                "PATH": os.environ["PATH"],
                **FAKE_ENV,
                "TRIGGERGATE_PIPELINE": f"codepipeline://deploy?endpoint_url={moto}&request_variable=TRIGGERGATE_REQUEST_ID",
                "TRIGGERGATE_NOTIFY": f"log://,sns://{topic}?endpoint_url={moto}",
                "TRIGGERGATE_COALESCE": "false",
                "TRIGGERGATE_STATE_DIR": state,
            }
            env = {
                **base,
                "TRIGGERGATE_STORE": f"dynamodb://{table}?endpoint_url={dynalite}&ttl_attribute=ttl",
            }
            outage = {**base, "TRIGGERGATE_STORE": f"dynamodb://{table}?endpoint_url={hole.url}"}
            results.append(measure(memory, env, outage, args.clients))
            print(json.dumps(results[-1]), flush=True)


if __name__ == "__main__":
    main()

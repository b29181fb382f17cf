"""A Lambda runtime in a process of its own, the way Lambda runs a Python function.

Lambda starts a process per execution environment, imports the handler's module
once (the init phase, outside any request), then calls the handler once per
event, one event at a time, for as long as the environment lives (cold: the first
event after init; warm: every later one). This module is both halves:

* run as ``python -m tests.servers.lambda_runtime MODULE.FUNCTION`` it is the
  runtime: it imports the module, reports how long init took, then reads one
  JSON event per stdin line and answers one JSON line on stdout with the
  handler's result and its duration (what Lambda bills), or the error Lambda
  would report. The handler's own stdout goes to stderr (on Lambda both end up
  in CloudWatch), so nothing it prints can corrupt the protocol.
* :class:`LambdaProcess` starts one such process from a test, optionally pinned
  to CPUs with ``taskset``, and drives it.

The environment the function sees is the template's plus the variables Lambda
itself defines (AWS docs, "Defined runtime environment variables").
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[2]
FUNCTION = "triggergate-api"
TIMEOUT = 28.0  # seconds, the template's function timeout


def lambda_environment(memory_mb: int = 512, function: str = FUNCTION) -> dict[str, str]:
    """The variables the Lambda service sets for a python3.12 function."""
    return {
        "AWS_LAMBDA_FUNCTION_NAME": function,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory_mb),
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{function}",
        "AWS_LAMBDA_LOG_STREAM_NAME": f"2026/01/01/[$LATEST]{uuid.uuid4().hex}",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.12",
        "LAMBDA_TASK_ROOT": str(ROOT),
        "TZ": ":UTC",
    }


@dataclass(frozen=True)
class Invocation:
    """One event's result: the handler's return value (or error) and its duration in seconds."""

    result: Any
    duration: float
    error: str | None = None

    @property
    def status(self) -> int:
        assert self.error is None, self.error
        return int(self.result["statusCode"])

    def json(self) -> Any:
        return json.loads(self.result["body"])


class LambdaProcess:
    """One execution environment: a runtime process that has imported the handler."""

    def __init__(
        self,
        handler: str,
        env: Mapping[str, str],
        *,
        cpus: str | None = None,
        taskset: str | None = None,
        stderr: IO[Any] | int | None = subprocess.DEVNULL,
    ) -> None:
        argv = [sys.executable, "-m", "tests.servers.lambda_runtime", handler]
        if cpus is not None:
            assert taskset is not None, "pinning needs the taskset binary"
            argv = [taskset, "-c", cpus, *argv]
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**env, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        self.init: float | None = None
        self.init_cpu: float | None = None  # CPU seconds the process spent up to the end of init
        self.invocations = 0

    def wait_init(self, timeout: float = 60.0) -> float:
        """Seconds the init phase took; raises if the module failed to import."""
        if self.init is None:
            line = self._line(timeout)
            if "init_error" in line:
                raise RuntimeError(f"init failed: {line['init_error']}")
            self.init = float(line["init"])
            self.init_cpu = float(line["init_cpu"])
        return self.init

    def send(self, event: Mapping[str, Any]) -> None:
        """Hand the process its next event (the answer is read by :meth:`receive`)."""
        self.wait_init()
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(event) + "\n")
        self.proc.stdin.flush()

    def receive(self, timeout: float = 60.0) -> Invocation:
        line = self._line(timeout)
        self.invocations += 1
        return Invocation(line.get("result"), float(line["duration"]), line.get("error"))

    def invoke(self, event: Mapping[str, Any], timeout: float = 60.0) -> Invocation:
        """One event, answered; the first after init is the cold invocation."""
        self.send(event)
        return self.receive(timeout)

    def _line(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        import selectors

        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stdout, selectors.EVENT_READ)
            if not selector.select(timeout):
                raise TimeoutError(f"the runtime did not answer within {timeout}s")
        text = self.proc.stdout.readline()
        if not text:
            raise RuntimeError(f"the runtime exited with {self.proc.wait(5)}")
        found: dict[str, Any] = json.loads(text)
        return found

    def close(self) -> None:
        """End the environment: close its input, then stop it by PID if it lingers."""
        from tests.servers._process import stop_pid

        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            stop_pid(self.proc.pid)
            self.proc.wait(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class _Context:
    """The attributes of Lambda's context object that a handler may read."""

    def __init__(self, deadline: float) -> None:
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", FUNCTION)
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.memory_limit_in_mb = int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512"))
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{self.function_name}"
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self._deadline = deadline

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def main(argv: Sequence[str]) -> int:
    """The runtime loop: init once, then one event per stdin line."""
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # what the function prints goes to stderr, as to CloudWatch on Lambda
    sys.stdout = sys.stderr
    module_name, _, function_name = argv[0].rpartition(".")
    started = time.perf_counter()
    try:
        handler = getattr(importlib.import_module(module_name), function_name)
    except Exception as exc:  # Lambda reports Runtime.ImportModuleError / init errors
        protocol.write(json.dumps({"init_error": f"{type(exc).__name__}: {exc}"}) + "\n")
        return 1
    init = {"init": time.perf_counter() - started, "init_cpu": time.process_time()}
    protocol.write(json.dumps(init) + "\n")
    for text in sys.stdin:
        event = json.loads(text)
        began = time.perf_counter()
        context = _Context(time.monotonic() + TIMEOUT)
        try:
            answer: dict[str, Any] = {"result": handler(event, context)}
        except Exception as exc:  # Lambda answers errorType/errorMessage; the API answers 502
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        answer["duration"] = time.perf_counter() - began
        protocol.write(json.dumps(answer) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""``serve`` on SIGTERM: it stops listening, answers the requests in flight, then exits.

What a service manager relies on when it stops or restarts the service (the container
runtime's stop, compose's stop_grace_period, systemd's TimeoutStopSec): no trigger
that was already being handled loses its answer.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.deploy.hook import held_hook
from tests.servers.app import start_app

pytestmark = [pytest.mark.slow, pytest.mark.sqlite]

HOLD = 11.0  # seconds the pipeline start still takes after SIGTERM: past a 10 s drain


def test_a_trigger_in_flight_at_sigterm_is_answered_when_its_start_outlasts_10_seconds(
    tmp_path: Path,
) -> None:
    """A pipeline start still running 11 s after SIGTERM (within backend_timeout, 30 s)
    ends in a 202 for its client; meanwhile the server accepts no new connection, and it
    exits once the answer is out, without cancelling anything."""
    config = tmp_path / "gate.toml"
    config.write_text("[pipeline_options]\nhttp_timeout = 25\nhttp_budget = 28\n", encoding="utf-8")
    with held_hook() as hook:
        env = {
            "TRIGGERGATE_CONFIG": str(config),
            "TRIGGERGATE_STORE": f"sqlite:///{tmp_path}/gate.db",
            "TRIGGERGATE_PIPELINE": hook.url,
            "TRIGGERGATE_STATE_DIR": str(tmp_path / "state"),
            "TRIGGERGATE_LOG_LEVEL": "INFO",
        }
        server = start_app(tmp_path, env)
        answers: list[httpx.Response | Exception] = []

        def press() -> None:
            try:
                answers.append(httpx.post(f"{server.url}/trigger", timeout=60))
            except httpx.HTTPError as exc:
                answers.append(exc)

        client = threading.Thread(target=press)
        try:
            client.start()
            hook.wait_arrived(1)
            os.killpg(server.proc.pid, signal.SIGTERM)
            signalled = time.monotonic()
            time.sleep(1)
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
            time.sleep(max(0.0, signalled + HOLD - time.monotonic()))
            assert server.proc.poll() is None, "the server exited with a request in flight"
            hook.release.set()
            client.join(timeout=30)
            code = server.proc.wait(timeout=20)
        finally:
            hook.release.set()
            if server.proc.poll() is None:
                server.kill()
    [answer] = answers
    assert isinstance(answer, httpx.Response), f"the client lost its answer: {answer!r}"
    assert answer.status_code == 202, answer.text
    assert code in (0, -signal.SIGTERM), code  # uvicorn re-raises the SIGTERM it handled
    assert "Cancel" not in server.output(), server.output()[-2000:]

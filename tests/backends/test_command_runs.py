"""The command:// backend's runs as processes: timeouts, detachment, lost runners, the demo."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from asyncio.subprocess import PIPE
from pathlib import Path

from tests.backends.command_support import (
    DEMO,
    alive,
    backend,
    live_in_group,
    parent_of,
    script,
    status_doc,
    until,
    wait_final,
)
from triggergate.backends.base import StartRequest, Status
from triggergate.backends.command_runner import write_status
from triggergate.clock import ManualClock


async def test_timeout_fails_the_run_and_ends_its_process_group(tmp_path: Path) -> None:
    """Past the timeout the run is failed ("timed out after 1 s") and no process of it lives on."""
    pids = tmp_path / "pids"
    body = f'sleep 300 &\necho $! > "{pids}"\necho $$ >> "{pids}"\nwait\n'
    b = backend(script(tmp_path, body), tmp_path, "timeout=1")
    began = time.monotonic()
    await b.start(StartRequest("run-slow", "c"))
    final = (await wait_final(b, "run-slow"))[-1]
    assert final == Status("failed", detail="timed out after 1 s")
    assert time.monotonic() - began < 5  # SIGTERM sufficed: no grace period was needed
    background, leader = (int(p) for p in pids.read_text().split())
    assert leader == status_doc(b, "run-slow")["pipeline_pid"]
    assert live_in_group(leader) == []
    assert not alive(background)
    assert not alive(leader)


async def test_timeout_kills_a_pipeline_that_ignores_sigterm(tmp_path: Path) -> None:
    """A pipeline ignoring SIGTERM is killed with SIGKILL after the grace period, group and all."""
    body = "trap '' TERM\nsleep 300 &\nwait || wait\n"
    b = backend(script(tmp_path, body), tmp_path, "timeout=0.5")
    await b.start(StartRequest("run-stubborn", "c"))
    final = (await wait_final(b, "run-stubborn", limit=15))[-1]
    assert final == Status("failed", detail="timed out after 0.5 s")
    assert status_doc(b, "run-stubborn")["exit_code"] == -signal.SIGKILL
    assert live_in_group(status_doc(b, "run-stubborn")["pipeline_pid"]) == []


async def test_run_survives_the_backend_object_being_discarded(tmp_path: Path) -> None:
    """A new backend over the same state_dir follows a run the discarded one started."""
    path = script(tmp_path, "sleep 0.5\n")
    first = backend(path, tmp_path)
    await first.start(StartRequest("run-orphan", "c"))
    runner = status_doc(first, "run-orphan")["pid"]
    del first
    assert parent_of(runner) != os.getpid()  # detached: never this process's child or zombie
    second = backend(path, tmp_path)
    assert (await wait_final(second, "run-orphan"))[-1].state == "succeeded"


async def test_run_survives_the_starting_process_exiting(tmp_path: Path) -> None:
    """A run started by a process that then exits keeps running and finishes; others read it."""
    path = script(tmp_path, "sleep 1\necho finished\n")
    code = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from triggergate.backends.base import StartRequest\n"
        "from triggergate.registry import Context, backend_from_url\n"
        "b = backend_from_url(sys.argv[1], Context(state_dir=Path(sys.argv[2])))\n"
        "print(asyncio.run(b.start(StartRequest('run-restart', 'c'))).state)\n"
    )
    starter = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, f"command://{path}", str(tmp_path), stdout=PIPE
    )
    out, _ = await asyncio.wait_for(starter.communicate(), 30)
    assert starter.returncode == 0
    assert out.decode().strip() == "running"
    b = backend(path, tmp_path)
    assert (await b.status("run-restart")).state == "running"
    assert (await wait_final(b, "run-restart"))[-1].state == "succeeded"
    assert "finished" in b.log_path("run-restart").read_text()


async def test_killed_runner_makes_the_run_failed_runner_lost(tmp_path: Path) -> None:
    """When the runner dies without a verdict, status() says failed with detail "runner lost"."""
    b = backend(script(tmp_path, "sleep 300\n"), tmp_path)
    await b.start(StartRequest("run-lost", "c"))
    doc = status_doc(b, "run-lost")
    try:
        os.kill(doc["pid"], signal.SIGKILL)
        await until(lambda: not alive(doc["pid"]))
        assert await b.status("run-lost") == Status("failed", detail="runner lost")
    finally:
        os.killpg(doc["pipeline_pid"], signal.SIGKILL)


async def test_sigterm_to_the_runner_cancels_the_run(tmp_path: Path) -> None:
    """SIGTERM to a runner stops its pipeline group and records the run as cancelled."""
    b = backend(script(tmp_path, "sleep 300\n"), tmp_path)
    await b.start(StartRequest("run-cancel", "c"))
    doc = status_doc(b, "run-cancel")
    os.kill(doc["pid"], signal.SIGTERM)
    final = (await wait_final(b, "run-cancel"))[-1]
    assert final == Status("cancelled", detail="cancelled by SIGTERM")
    assert live_in_group(doc["pipeline_pid"]) == []


async def test_queued_run_without_a_runner_is_lost_after_a_minute(tmp_path: Path) -> None:
    """A run folder left queued by a crash between its creation and its spawn turns failed."""
    clock = ManualClock()
    b = backend(script(tmp_path, "true\n"), tmp_path, clock=clock)
    run_dir = tmp_path / "runs" / "run-crashed"
    run_dir.mkdir(parents=True)
    write_status(run_dir, {"state": "queued", "pid": None, "queued_at": clock()})
    assert await b.status("run-crashed") == Status("queued")
    clock.advance(61)
    assert await b.status("run-crashed") == Status("failed", detail="runner lost")


async def test_demo_pipeline_runs_its_stages_in_about_four_seconds(tmp_path: Path) -> None:
    """The bundled demo prints run id, params and its four stages in order, and succeeds in ~4 s."""
    assert os.access(DEMO, os.X_OK)
    b = backend(DEMO, tmp_path)
    await b.start(StartRequest("demo-1", "c", {"env": "$(reboot)\nFAKE LINE"}, ref="main"))
    assert (await wait_final(b, "demo-1"))[-1].state == "succeeded"
    doc = status_doc(b, "demo-1")
    assert 3.5 <= doc["ended_at"] - doc["started_at"] <= 8
    log = b.log_path("demo-1").read_text()
    assert "run demo-1 starting" in log
    assert "ref=main" in log
    assert "param ENV=$'$(reboot)\\nFAKE LINE'" in log
    assert not any(line.startswith("FAKE LINE") for line in log.splitlines())
    marks = [log.index(f"stage {stage}: done") for stage in ("checkout", "build", "test", "deploy")]
    assert marks == sorted(marks)

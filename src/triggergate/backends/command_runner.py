"""The detached process that runs one ``command://`` pipeline and records its outcome.

Started by :class:`~triggergate.backends.command.CommandBackend` as::

    python -m triggergate.backends.command_runner RUN_DIR TIMEOUT -- EXECUTABLE [ARG...]

It forks once more and lets the first process exit, so the run belongs to no
server process: it outlives a server restart, is never left as the server's
zombie, and any worker reads its state from ``RUN_DIR/status.json``.

Files in ``RUN_DIR``: ``env.json`` (the pipeline's whole environment, written
by the backend), ``output.log`` (the pipeline's stdout and stderr),
``status.json`` (written atomically) and ``workspace/`` (the pipeline's cwd).

This module imports only the standard library: it starts once per run.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

RUNNER_MODULE = "triggergate.backends.command_runner"
STATUS_FILE = "status.json"
ENV_FILE = "env.json"
LOG_FILE = "output.log"
WORKSPACE = "workspace"

#: The status detail when the executable cannot be started; the backend reads it as a refusal.
SPAWN_FAILED = "the pipeline executable could not be started"

#: Seconds a timed-out or cancelled pipeline gets between SIGTERM and SIGKILL.
KILL_GRACE = 5.0


def write_status(run_dir: Path, doc: dict[str, Any]) -> None:
    """Replace ``status.json`` atomically: readers see the old or the new document, never half."""
    tmp = run_dir / f".{STATUS_FILE}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(doc, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, run_dir / STATUS_FILE)


def read_status(run_dir: Path) -> dict[str, Any] | None:
    """The run's status document, or None when none has been written yet."""
    try:
        text = (run_dir / STATUS_FILE).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    doc: dict[str, Any] = json.loads(text)
    return doc


def runner_alive(pid: object) -> bool:
    """Whether ``pid`` is still a live runner (not gone, not a zombie, not a reused pid)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc here: the signal test is all there is
    if stat.rsplit(b")", 1)[-1].split()[:1] in ([b"Z"], [b"X"]):
        return False  # an orphan nobody reaped: its init does not reap zombies
    return RUNNER_MODULE.encode() in cmdline


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _stop(proc: subprocess.Popen[bytes]) -> int:
    """End the pipeline's whole process group: SIGTERM, a grace period, then SIGKILL."""
    _signal_group(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(KILL_GRACE)
    # Also reaches children that outlived the leader or ignored SIGTERM.
    _signal_group(proc.pid, signal.SIGKILL)
    return proc.wait()


def _outcome(code: int) -> tuple[str, str]:
    if code == 0:
        return "succeeded", ""
    if code < 0:
        return "failed", f"killed by {signal.Signals(-code).name}"
    return "failed", f"exit code {code}"


TAKEN = "taken"  # a folder created exactly once: by the runner before it runs, or by a fence


def take(run_dir: Path) -> bool:
    """Claim the run: True for whoever creates the marker first (os.mkdir is atomic).

    The runner takes a run before executing it; :meth:`CommandBackend.find` takes a
    run nobody took yet to fence it off, so a runner that starts late never runs it
    and "not started" stays true.
    """
    try:
        (run_dir / TAKEN).mkdir()
    except FileExistsError:
        return False
    return True


def run(run_dir: Path, timeout: float, argv: list[str]) -> int:
    """Run ``argv`` to its end or its timeout, recording every state change; the exit code."""
    if not take(run_dir):
        return 1  # fenced off by a reconciliation: this run must never start
    doc: dict[str, Any] = read_status(run_dir) or {}
    env = json.loads((run_dir / ENV_FILE).read_text(encoding="utf-8"))
    workspace = run_dir / WORKSPACE
    workspace.mkdir(exist_ok=True)
    proc: subprocess.Popen[bytes] | None = None
    cancelled = False

    def cancel(signum: int, frame: FrameType | None) -> None:
        nonlocal cancelled
        cancelled = True
        if proc is not None:
            _signal_group(proc.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, cancel)
    with open(run_dir / LOG_FILE, "ab", buffering=0) as log:

        def note(line: str) -> None:
            log.write(f"[triggergate] {line}\n".encode())

        def finish(state: str, detail: str, code: int | None) -> int:
            doc.update(state=state, detail=detail, exit_code=code, ended_at=time.time())
            write_status(run_dir, doc)
            note(f"run {state}" + (f": {detail}" if detail else ""))
            return 0 if state == "succeeded" else 1

        if cancelled:
            return finish("cancelled", "cancelled before it started", None)
        try:
            proc = subprocess.Popen(  # noqa: S603 - an argv list from the operator's config, no shell
                argv,
                env=env,
                cwd=workspace,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so a timeout ends all of it
            )
        except OSError as exc:
            note(f"cannot start the pipeline: {exc.strerror}")
            return finish("failed", SPAWN_FAILED, None)
        doc.update(state="running", pid=os.getpid(), pipeline_pid=proc.pid, started_at=time.time())
        write_status(run_dir, doc)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            code = _stop(proc)
            if cancelled:
                return finish("cancelled", "cancelled by SIGTERM", code)
            return finish("failed", f"timed out after {timeout:g} s", code)
        if cancelled:
            _signal_group(proc.pid, signal.SIGKILL)
            return finish("cancelled", "cancelled by SIGTERM", code)
        state, detail = _outcome(code)
        return finish(state, detail, code)


def main(args: list[str]) -> int:
    """Parse ``RUN_DIR TIMEOUT -- ARGV...``, detach, and run."""
    if len(args) < 4 or args[2] != "--":
        print("usage: command_runner RUN_DIR TIMEOUT -- EXECUTABLE [ARG...]", file=sys.stderr)
        return 2
    run_dir, timeout, argv = Path(args[0]), float(args[1]), args[3:]
    # Double fork: the parent (the server's child) exits at once and is reaped by the
    # server; this process is re-parented to init and belongs to no server process.
    if os.fork() > 0:
        os._exit(0)
    return run(run_dir, timeout, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

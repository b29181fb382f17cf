"""``command://``: run a local executable as the pipeline, never through a shell.

URL: ``command:///abs/path/to/executable?arg=--flag&arg=value&timeout=600&name=demo``.
Query values are percent-decoded; ``+`` stays a literal plus (argv must be exact).

Each run lives in ``STATE_DIR/runs/<request id>/`` and is driven by a detached
:mod:`~triggergate.backends.command_runner` process, so it survives a server
restart and any worker reads its state from files. Creating that folder is the
idempotency lock: ``os.mkdir`` is atomic, so of any number of racing starts with
one request id exactly one spawns a runner; the others return the same run.

The pipeline's environment is minimal: ``PATH``, ``LANG`` and ``HOME`` from the
server's, ``TRIGGERGATE_RUN_ID``, ``TRIGGERGATE_REF`` when a ref was given, and
``TRIGGERGATE_PARAM_<NAME>`` (name upper-cased) per parameter. Values reach it
byte for byte; no shell ever sees them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import unquote, urlsplit

from triggergate.backends.base import Backend, RunState, Started, StartRequest, Status
from triggergate.backends.command_runner import (
    ENV_FILE,
    LOG_FILE,
    RUNNER_MODULE,
    SPAWN_FAILED,
    read_status,
    runner_alive,
    take,
    write_status,
)
from triggergate.clock import Clock, system_clock
from triggergate.errors import BackendError, BackendRefused, BackendUncertain, ConfigurationError
from triggergate.registry import Context

DEFAULT_TIMEOUT = 900.0
PASSED_ENV = ("PATH", "LANG", "HOME")
PARAM_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
MAX_VALUE_CHARS = 1024
# A request id becomes a folder name: no separators, no leading dot (so never "..").
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
KNOWN_STATES: frozenset[str] = frozenset({"queued", "running", "succeeded", "failed", "cancelled"})
SPAWN_WAIT = 10.0  # seconds start() waits for the runner to report the executable started
LOST_AFTER = 60.0  # a run still queued this long after creation has no runner
POLL = 0.02

_STRAYS: list[subprocess.Popen[bytes]] = []


def _invalid(url: str, problem: str, allowed: str) -> ConfigurationError:
    return ConfigurationError(f"pipeline: {problem} in {url!r}; {allowed}", key="pipeline", value=url)


def _query(raw: str) -> list[tuple[str, str]]:
    pairs = []
    for item in raw.split("&") if raw else []:
        key, _, value = item.partition("=")
        pairs.append((unquote(key), unquote(value)))
    return pairs


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _checked(value: object, what: str) -> str:
    if not isinstance(value, str) or "\x00" in value or len(value) > MAX_VALUE_CHARS:
        raise BackendRefused(f"{what}: a value must be text without NUL, at most 1024 characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BackendRefused(f"{what}: a value must be valid Unicode text") from exc
    return value


def _no_runner(run_dir: Path, doc: dict[str, object]) -> BackendRefused:
    with contextlib.suppress(OSError):
        write_status(run_dir, {**doc, "state": "failed", "detail": SPAWN_FAILED})
    return BackendRefused("the pipeline runner could not be started")


NEVER_STARTED = "never started"  # the detail of a run fenced off by find()


class CommandBackend(Backend):
    """Runs a local executable per trigger; state and output live in files under state_dir."""

    def __init__(
        self,
        executable: Path,
        args: Sequence[str],
        *,
        runs_dir: Path,
        timeout: float = DEFAULT_TIMEOUT,
        name: str | None = None,
        environ: Mapping[str, str] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.executable = executable
        self.args = tuple(args)
        self.runs_dir = runs_dir
        self.timeout = timeout
        self.name = name or executable.name
        self._environ = dict(environ if environ is not None else os.environ)
        self._clock = clock or system_clock

    @classmethod
    def from_url(cls, url: str, ctx: Context) -> CommandBackend:
        """Parse and check the URL now, so a bad one fails at start-up, not at the first trigger."""
        parts = urlsplit(url)
        absolute = "command:///ABSOLUTE/PATH (three slashes)"
        if parts.netloc or parts.fragment:
            raise _invalid(url, "a host or fragment", f"allowed: {absolute}")
        path = unquote(parts.path)
        if not path.startswith("/"):
            raise _invalid(url, f"path {path!r} is not absolute", f"allowed: {absolute}")
        executable = Path(path)
        if not executable.exists():
            raise _invalid(url, f"no such file {path!r}", "allowed: an existing executable file")
        if not _executable(executable):
            raise _invalid(
                url,
                f"{path!r} is not an executable file",
                "allowed: an executable regular file (chmod +x)",
            )
        args: list[str] = []
        options: dict[str, str] = {}
        for key, value in _query(parts.query):
            if key == "arg":
                if "\x00" in value:
                    raise _invalid(url, "arg with a NUL byte", "allowed: text without NUL")
                args.append(value)
            elif key in ("timeout", "name") and key not in options:
                options[key] = value
            else:
                raise _invalid(
                    url,
                    f"query key {key!r}",
                    "allowed: arg (repeatable), timeout and name (once each)",
                )
        timeout = DEFAULT_TIMEOUT
        if "timeout" in options:
            try:
                timeout = float(options["timeout"])
            except ValueError:
                timeout = math.nan
            if not (math.isfinite(timeout) and timeout > 0):
                raise _invalid(
                    url, f"timeout={options['timeout']!r}", "allowed: a positive number of seconds"
                )
        if options.get("name") == "":
            raise _invalid(url, "an empty name", "allowed: a short non-empty name")
        return cls(
            executable,
            args,
            runs_dir=(ctx.state_dir / "runs").absolute(),
            timeout=timeout,
            name=options.get("name"),
            environ=ctx.environ,
            clock=ctx.clock,
        )

    def _run_dir(self, ref: str) -> Path | None:
        return self.runs_dir / ref if RUN_ID.fullmatch(ref) else None

    def log_path(self, ref: str) -> Path:
        """The run's stdout and stderr, for operators; ValueError for a malformed ref."""
        run_dir = self._run_dir(ref)
        if run_dir is None:
            raise ValueError("not a run reference")
        return run_dir / LOG_FILE

    def pipeline_env(self, request: StartRequest) -> dict[str, str]:
        """The pipeline's whole environment; BackendRefused for a parameter the rules forbid."""
        env = {key: self._environ[key] for key in PASSED_ENV if key in self._environ}
        env["TRIGGERGATE_RUN_ID"] = request.request_id
        if request.ref is not None:
            env["TRIGGERGATE_REF"] = _checked(request.ref, "ref")
        for name, value in request.params.items():
            if not isinstance(name, str) or not PARAM_NAME.fullmatch(name):
                raise BackendRefused("parameter names must match ^[A-Za-z][A-Za-z0-9_]{0,63}$")
            key = f"TRIGGERGATE_PARAM_{name.upper()}"
            if key in env:
                raise BackendRefused("two parameter names differ only in case")
            env[key] = _checked(value, "parameter")
        return env

    async def start(self, request: StartRequest) -> Started:
        """Start one run per request id: create its folder atomically, then spawn its runner."""
        env = self.pipeline_env(request)
        ref = request.request_id
        run_dir = self._run_dir(ref)
        if run_dir is None:
            raise BackendRefused("the request id cannot name a run")
        if not _executable(self.executable):
            raise BackendRefused("the pipeline executable is missing", misconfigured=True)
        try:
            self.runs_dir.mkdir(parents=True, exist_ok=True)
            run_dir.mkdir()
        except FileExistsError:
            return Started(ref=ref, state=self._read(run_dir).state)
        except OSError as exc:
            raise BackendRefused("cannot create the run folder", misconfigured=True) from exc
        doc: dict[str, object] = {
            "state": "queued", "exit_code": None, "started_at": None, "ended_at": None,
            "pid": None, "detail": "", "queued_at": self._clock(),
        }  # fmt: skip
        try:
            code = await asyncio.to_thread(self._launch, run_dir, env, doc)
        except subprocess.TimeoutExpired as exc:
            raise BackendUncertain("the pipeline runner did not report in time") from exc
        except OSError as exc:
            raise _no_runner(run_dir, doc) from exc
        if code != 0:  # the runner exits non-zero only before it forks: nothing started
            raise _no_runner(run_dir, doc)
        return await self._await_report(ref, run_dir)

    def _launch(self, run_dir: Path, env: dict[str, str], doc: dict[str, object]) -> int:
        """Write the run's environment and queued status, then spawn its runner (in a thread:
        fsync and fork must not stall the event loop); the first runner process's exit code."""
        (run_dir / ENV_FILE).write_text(json.dumps(env), encoding="utf-8")
        write_status(run_dir, doc)
        _STRAYS[:] = [stray for stray in _STRAYS if stray.poll() is None]
        argv = [sys.executable, "-m", RUNNER_MODULE, str(run_dir), repr(self.timeout), "--"]
        argv += [str(self.executable), *self.args]
        with open(run_dir / LOG_FILE, "ab") as log:
            runner = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                argv,
                cwd=run_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # no signal from the server's terminal reaches the run
            )
        # The first runner process only forks and exits, so this wait is short.
        try:
            return runner.wait(SPAWN_WAIT)
        except subprocess.TimeoutExpired:
            _STRAYS.append(runner)  # reaped by a later spawn, never left for __del__ to warn about
            raise

    async def _await_report(self, ref: str, run_dir: Path) -> Started:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SPAWN_WAIT
        while loop.time() < deadline:
            status = self._read(run_dir)
            if status.state == "failed" and status.detail == SPAWN_FAILED:
                raise BackendRefused("the pipeline executable could not be started", misconfigured=True)
            if status.state != "queued":
                return Started(ref=ref, state=status.state)
            await asyncio.sleep(POLL)
        raise BackendUncertain("the pipeline runner did not report in time")

    def _read(self, run_dir: Path) -> Status:
        try:
            doc = read_status(run_dir)
            created = run_dir.stat().st_mtime
        except (OSError, ValueError) as exc:
            raise BackendError("cannot read the run status", definite=False) from exc
        if doc is None:  # between the folder's creation and its first status write
            queued_at = created
        else:
            state = doc.get("state")
            if state not in KNOWN_STATES:
                return Status("unknown")
            if state == "running" and not runner_alive(doc.get("pid")):
                return Status("failed", detail="runner lost")
            if state != "queued":
                final: RunState = state
                return Status(final, detail=str(doc.get("detail") or ""))
            queued_at = float(doc.get("queued_at") or created)
        if self._clock() - queued_at > LOST_AFTER:
            return Status("failed", detail="runner lost")
        return Status("queued")

    async def status(self, ref: str) -> Status:
        """The run's state from its status file; ``unknown`` for a ref this backend never made."""
        run_dir = self._run_dir(ref)
        if run_dir is None or not run_dir.is_dir():
            return Status("unknown")
        return self._read(run_dir)

    async def find(self, request_id: str) -> Started | None:
        """The run started with ``request_id``, or None; the answer is final.

        A folder whose runner has not taken the run yet is a start cut short (the
        server died between creating the folder and spawning the runner, or the
        runner is still on its way): ``find`` takes the run itself, which fences
        off any late runner, records it cancelled, and reports it not started,
        so the reconciler's refund can never meet a run that starts afterwards.
        """
        run_dir = self._run_dir(request_id)
        if run_dir is None or not run_dir.is_dir():
            return None
        if take(run_dir):
            doc = read_status(run_dir) or {}
            doc.update(state="cancelled", detail=NEVER_STARTED, ended_at=self._clock())
            write_status(run_dir, doc)
            return None
        status = self._read(run_dir)
        if status.detail == NEVER_STARTED:  # fenced off earlier: still not started
            return None
        return Started(ref=request_id, state=status.state)

    async def ping(self) -> None:
        """Ready when the executable is still there and executable."""
        if not _executable(self.executable):
            raise BackendRefused("the pipeline executable is missing", misconfigured=True)

"""Podman for the deploy tests: one runtime configuration, bounded calls, and cleanup of
exactly the containers, volumes and images the suite created (by name, never by pattern)."""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.servers._process import require_binary


def containers_conf(folder: Path) -> Path:
    """A CONTAINERS_CONF for this machine: runc, and rlimits the runtime may set.

    crun cannot set rlimits or use this machine's cgroups, and podman's default
    ``nofile`` (1048576) is above the hard limit here, which fails every container
    with EPERM. So: runc, with ``nofile`` at the host's hard limit and a modest ``nproc``
    (an ``nproc`` above the kernel's pid_max is refused as well).
    """
    nofile = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 65536)
    nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[1], 4096)
    path = folder / "containers.conf"
    path.write_text(
        "[containers]\n"
        f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
        "[engine]\n"
        'runtime = "runc"\n',
        encoding="utf-8",
    )
    return path


@dataclass
class Podman:
    """Runs ``podman`` with the test configuration; remembers what it must remove."""

    conf: Path
    binary: str = field(default_factory=lambda: require_binary("podman"))
    containers: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "CONTAINERS_CONF": str(self.conf)}

    def __call__(
        self, *args: str, timeout: float = 60, check: bool = True, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """One podman command, bounded by ``timeout``; its output in the failure message."""
        done = subprocess.run(
            [self.binary, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env,
            cwd=cwd,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"podman {' '.join(args)[:300]} exited {done.returncode}:\n"
                f"{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
            )
        return done

    def owns(self, kind: str, name: str) -> None:
        """Record a name the suite created, so cleanup removes it (and only such names)."""
        getattr(self, kind).append(name)

    def inspect(self, container: str, template: str) -> str:
        return self("inspect", container, "--format", template).stdout.strip()

    def logs(self, container: str) -> str:
        done = self("logs", container, check=False, timeout=30)
        return done.stdout + done.stderr

    def remove_container(self, name: str) -> None:
        """Remove a container and its anonymous volumes (the image declares one); named
        volumes stay until cleanup."""
        self("rm", "--force", "--volumes", "--time", "0", "--ignore", name, check=False, timeout=60)

    def cleanup(self) -> None:
        """Remove what the suite created: containers, then volumes, then images."""
        for name in reversed(self.containers):
            self.remove_container(name)
        for name in reversed(self.volumes):
            self("volume", "rm", "--force", name, check=False, timeout=60)
        for name in reversed(self.images):
            self("rmi", "--force", "--ignore", name, check=False, timeout=120)


def wait_healthy(url: str, timeout: float = 30) -> None:
    """Return once ``url``/healthz answers 200; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        time.sleep(0.2)
    raise AssertionError(f"{url}/healthz did not answer 200 within {timeout} s")


def wait_exited(podman: Podman, container: str, timeout: float) -> int:
    """The container's exit code once it has stopped; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if podman.inspect(container, "{{.State.Status}}") in ("exited", "stopped"):
            return int(podman.inspect(container, "{{.State.ExitCode}}"))
        time.sleep(0.2)
    raise AssertionError(f"{container} still runs after {timeout} s")

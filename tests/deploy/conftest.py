"""Fixtures of the deploy suite: podman, the image built once per session, README runs."""

from __future__ import annotations

import itertools
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.deploy.build import Image, build_image, session_tag
from tests.deploy.podman import Podman, containers_conf
from tests.deploy.readme import Command, publish, rewrite
from tests.servers._process import free_port
from tests.servers.redis import redis_server

__all__ = ["redis_server"]

_COUNTER = itertools.count(1)


@pytest.fixture(scope="session")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    """Podman with this machine's runtime settings; at the end, what the suite created is removed."""
    pod = Podman(containers_conf(tmp_path_factory.mktemp("podman")))
    try:
        yield pod
    finally:
        pod.cleanup()


@pytest.fixture(scope="session")
def image(podman: Podman, tmp_path_factory: pytest.TempPathFactory) -> Image:
    """The image, built once per session by the README's build command."""
    return build_image(podman, tmp_path_factory.mktemp("build"), session_tag())


@dataclass
class ReadmeRun:
    """Runs the README's container commands with this test's names, folder and port."""

    podman: Podman
    image: Image
    names: dict[str, str]  # the README's name -> this test's
    cwd: Path  # what the README's $PWD is
    port: int  # the free loopback port in place of the README's 8080

    @property
    def container(self) -> str:
        return self.names["triggergate"]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def do(self, command: Command) -> None:
        """Run one README command: podman with the test's names, other shell lines as written
        (in ``cwd``); ``curl`` lines are what the test then checks over HTTP itself."""
        if command.program == "curl":
            assert "http://127.0.0.1:8080/" in command.text, command.text
            return
        if command.argv[0] != "podman":
            done = subprocess.run(
                ["bash", "-c", command.text], cwd=self.cwd, capture_output=True, text=True, timeout=30
            )
            assert done.returncode == 0, (command.text, done.stderr)
            return
        argv = rewrite(command.argv, self.names, self.cwd)
        if command.program == "podman run":
            argv = publish(argv, self.port)
            assert argv[-1] == self.container, f"the image is not the last word: {command.text}"
            argv[-1] = self.image.ref
        self.podman(*argv[1:], timeout=120)


def fresh_name(podman: Podman) -> str:
    """A container name of this session (with ``-data`` for its volume), removed at the end."""
    stem = f"{session_tag()}-{next(_COUNTER)}"
    podman.owns("containers", stem)
    podman.owns("volumes", f"{stem}-data")
    return stem


@pytest.fixture
def readme_run(podman: Podman, image: Image, tmp_path: Path) -> Iterator[ReadmeRun]:
    """Fresh names and a free port for one README walk-through; its container and volume
    are removed after the test."""
    stem = fresh_name(podman)
    names = {"triggergate": stem, "triggergate-data": f"{stem}-data"}
    yield ReadmeRun(podman, image, names, tmp_path, free_port())
    podman.remove_container(stem)
    podman("volume", "rm", "--force", f"{stem}-data", check=False, timeout=60)

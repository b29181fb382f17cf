"""The container image, run the way the README's Deploy section says (podman, runc)."""

from __future__ import annotations

import json
import re
import socket
import threading
import time

import httpx
import pytest

from tests.deploy.build import Image
from tests.deploy.conftest import ReadmeRun, fresh_name
from tests.deploy.hook import held_hook
from tests.deploy.podman import Podman, wait_exited, wait_healthy
from tests.deploy.readme import Command, blocks
from tests.servers._process import free_port
from triggergate.cli import drain_seconds
from triggergate.settings import Settings

# The first test also builds the image (and, on a first run, bootstraps its base).
pytestmark = [pytest.mark.slow, pytest.mark.container, pytest.mark.timeout(600)]

UID = "10001"


def readme_commands() -> tuple[list[Command], list[Command]]:
    """The two blocks: build and serve the demo; run with your own configuration."""
    demo, own = blocks("Container image")
    return demo, own


def stop_timeout() -> int:
    """The ``--stop-timeout`` the README's run commands give the container."""
    values = {int(m) for c in readme_commands()[1] + readme_commands()[0] for m in re.findall(
        r"--stop-timeout[= ](\d+)", c.text)}  # fmt: skip
    assert len(values) == 1, values
    return values.pop()


def test_the_image_runs_serve_as_uid_10001_with_a_volume_a_health_check_and_sigterm(
    podman: Podman, image: Image
) -> None:
    """The built image's configuration: user 10001, state volume, port 8080 on all
    interfaces, tini in front of ``triggergate serve``, SIGTERM, a /healthz check."""
    [inspected] = json.loads(podman("image", "inspect", image.ref, timeout=30).stdout)
    config = inspected["Config"]
    assert config["User"] == f"{UID}:{UID}"
    assert list(config["Volumes"]) == ["/var/lib/triggergate"]
    assert config["WorkingDir"] == "/var/lib/triggergate"
    assert list(config["ExposedPorts"]) == ["8080/tcp"]
    assert config["StopSignal"] == "SIGTERM"
    assert config["Entrypoint"][:1] == ["tini"]
    assert config["Entrypoint"][-6:] == ["triggergate", "serve", "--host", "0.0.0.0", "--port", "8080"]
    health = inspected.get("Healthcheck") or config["Healthcheck"]  # podman: top level; docker: Config
    assert "http://127.0.0.1:8080/healthz" in " ".join(health["Test"])


def test_the_readme_commands_serve_the_demo_as_non_root_and_keep_the_quota_across_a_restart(
    readme_run: ReadmeRun,
) -> None:
    """The README's first block: three 202s then a 429 with Retry-After; every process
    of the container runs as uid 10001; the image's health check passes; `podman stop`
    exits 0 at once; the same run command on the same volume finds the quota spent."""
    demo, _ = readme_commands()
    steps = [c for c in demo if c.program != "podman build"]  # the session fixture built it
    run = next(c for c in steps if c.program == "podman run")
    for command in steps[: steps.index(run) + 1]:
        readme_run.do(command)
    wait_healthy(readme_run.url)
    presses = [httpx.post(f"{readme_run.url}/trigger", timeout=30) for _ in range(4)]
    assert [p.status_code for p in presses] == [202, 202, 202, 429]
    assert 604000 < int(presses[3].headers["retry-after"]) <= 604800
    assert presses[3].json()["error"] == "quota_exhausted"
    run_url = f"{readme_run.url}/runs/{presses[0].json()['run_id']}"
    deadline = time.monotonic() + 30
    while (status := httpx.get(run_url, timeout=10).json()["status"]) != "succeeded":
        assert status in ("queued", "running") and time.monotonic() < deadline, status
        time.sleep(0.5)

    container = readme_run.container
    uids = readme_run.podman("exec", container, "sh", "-c", "cat /proc/[0-9]*/status").stdout
    assert set(re.findall(r"^Uid:\s+(\d+)", uids, re.M)) == {UID}
    owner = readme_run.podman("exec", container, "stat", "-c", "%u", "triggergate.db").stdout
    assert owner.strip() == UID
    assert readme_run.podman("healthcheck", "run", container, check=False).returncode == 0

    rest = steps[steps.index(run) + 1 :]
    started = time.monotonic()
    for command in rest:
        if command.program == "podman rm":
            assert readme_run.podman.inspect(container, "{{.State.ExitCode}}") == "0"
            assert time.monotonic() - started < 10, "stopping an idle server should not wait"
        readme_run.do(command)
    readme_run.do(run)
    wait_healthy(readme_run.url)
    again = httpx.post(f"{readme_run.url}/trigger", timeout=30)
    assert again.status_code == 429, again.text
    assert httpx.get(f"{readme_run.url}/quota", timeout=10).json()["remaining"] == 0


def test_a_mounted_toml_configures_the_container_and_a_secret_comes_from_a_file(
    readme_run: ReadmeRun,
) -> None:
    """The README's second block: the TOML mounted over the image's applies (its limit),
    the admin token read through TRIGGERGATE_ADMIN_TOKEN_FILE opens /admin, and the
    token appears nowhere in the container's configuration."""
    token = "admin-token-of-the-container-test-7c1e9a"
    (readme_run.cwd / "triggergate.toml").write_text(
        'pipeline = "noop://"\nlimits = ["5/7d"]\ntitle = "Our own gate"\n', encoding="utf-8"
    )
    (readme_run.cwd / "admin-token").write_text(token + "\n", encoding="utf-8")
    _, own = readme_commands()
    for command in own:
        readme_run.do(command)
    wait_healthy(readme_run.url)
    assert httpx.get(f"{readme_run.url}/quota", timeout=10).json()["limits"] == ["5/7d"]
    assert "Our own gate" in httpx.get(f"{readme_run.url}/", timeout=10).text
    admin = httpx.get(f"{readme_run.url}/admin", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert admin.status_code == 200
    wrong = httpx.get(f"{readme_run.url}/admin", headers={"Authorization": "Bearer nope"}, timeout=10)
    assert wrong.status_code != 200
    assert token not in readme_run.podman("inspect", readme_run.container, timeout=30).stdout


def test_sigterm_lets_the_containers_requests_in_flight_finish_within_its_stop_timeout(
    podman: Podman, image: Image
) -> None:
    """Six triggers held in their pipeline start when `podman stop` sends SIGTERM: the
    container stops accepting connections, answers all six with 202 once their starts
    complete, and exits 0 well within the README's stop timeout (which is longer than the
    server's drain)."""
    grace = stop_timeout()
    assert grace > drain_seconds(Settings()), (grace, drain_seconds(Settings()))
    name, port = fresh_name(podman), free_port()
    with held_hook() as hook:
        podman(
            "run", "-d", "--name", name, "--network", "host", f"--stop-timeout={grace}",
            "-e", f"TRIGGERGATE_PIPELINE={hook.url}", "-e", "TRIGGERGATE_LIMITS=100/7d",
            image.ref, "--host", "127.0.0.1", "--port", str(port), timeout=120,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url)
        answers: list[int] = []
        clients = [
            threading.Thread(
                target=lambda: answers.append(httpx.post(f"{url}/trigger", timeout=60).status_code)
            )
            for _ in range(6)
        ]
        for client in clients:
            client.start()
        hook.wait_arrived(6)
        stopped: list[float] = []
        started = time.monotonic()
        stopper = threading.Thread(
            target=lambda: (podman("stop", name, timeout=grace + 30), stopped.append(time.monotonic()))
        )
        stopper.start()
        time.sleep(1.5)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        assert podman.inspect(name, "{{.State.Status}}") == "stopping", "it quit with requests in flight"
        hook.release.set()
        for client in clients:
            client.join(timeout=30)
        stopper.join(timeout=grace + 30)
    assert sorted(answers) == [202] * 6
    assert stopped and stopped[0] - started < grace
    assert wait_exited(podman, name, 10) == 0
    podman.remove_container(name)

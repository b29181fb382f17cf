"""deploy/systemd/triggergate.service: verified by systemd itself, hardened, and serving
behind the shipped nginx config as the README installs it.

There is no systemd manager on the test machines, so the unit is not started; its
command line is run with the unit's own environment in a folder standing for its state
directory, and ``systemd-analyze`` checks the unit file. ``verify`` requires the
ExecStart binary to exist: the unit's ``/opt/triggergate/bin/triggergate`` (where the
README installs it) is pointed at this checkout's installed ``triggergate``, the same
entry point.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.deploy.podman import wait_healthy
from tests.deploy.readme import blocks
from tests.servers._process import free_port, require_binary
from triggergate.cli import drain_seconds
from triggergate.settings import Settings

pytestmark = [pytest.mark.slow, pytest.mark.sqlite]

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "systemd" / "triggergate.service"
INSTALLED = "/opt/triggergate/bin/triggergate"
HERE = str(Path(sys.executable).with_name("triggergate"))
NGINX = ROOT / "deploy" / "nginx" / "triggergate.conf"


def settings_of(text: str) -> dict[str, list[str]]:
    """Every ``Key=value`` of the unit (repeated keys in order), comments left out."""
    found: dict[str, list[str]] = {}
    for key, value in re.findall(r"^([A-Za-z]+)=(.*)$", text, re.M):
        found.setdefault(key, []).append(value.strip())
    return found


def readme_commands() -> list[list[str]]:
    return [list(c.argv) for block in blocks("systemd: one machine behind nginx") for c in block]


def verify(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    """The README's ``systemd-analyze verify`` on ``text`` saved as triggergate.service."""
    [command] = [c for c in readme_commands() if "verify" in c]
    assert command[:3] == ["sudo", "systemd-analyze", "verify"] and command[3].endswith(
        "/triggergate.service"
    )
    unit = tmp_path / "triggergate.service"
    assert INSTALLED in text
    unit.write_text(text.replace(INSTALLED, HERE), encoding="utf-8")
    argv = [require_binary("systemd-analyze"), "verify", str(unit)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=tmp_path)


def test_systemd_analyze_verify_finds_nothing_in_the_unit(tmp_path: Path) -> None:
    """The README's verify command exits 0 and prints nothing for the shipped unit."""
    done = verify(tmp_path, UNIT.read_text(encoding="utf-8"))
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_the_units_credential_lines_verify_as_well(tmp_path: Path) -> None:
    """Uncommented, each documented secret is a credential handed over as a
    TRIGGERGATE_<NAME>_FILE path, and the unit still verifies clean."""
    text = re.sub(r"^#((?:LoadCredential|Environment)=)", r"\1", UNIT.read_text(encoding="utf-8"), flags=re.M)
    keys = settings_of(text)
    ids = [value.split(":")[0] for value in keys["LoadCredential"]]
    assert ids and all(f"_FILE=%d/{i}" in " ".join(keys["Environment"]) for i in ids)
    done = verify(tmp_path, text)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_verify_reports_a_wrong_setting(tmp_path: Path) -> None:
    """Control: a value systemd cannot parse is reported, so the clean result above means
    something."""
    text = UNIT.read_text(encoding="utf-8").replace("ProtectSystem=strict", "ProtectSystem=sometimes")
    done = verify(tmp_path, text)
    assert "Failed to parse protect system value, ignoring: sometimes" in done.stderr


def test_the_unit_is_sandboxed_and_restarts_on_failure(tmp_path: Path) -> None:
    """Dynamic user, read-only system, no new privileges and no capabilities, a state
    directory, Restart=on-failure; systemd's own offline assessment rates it below 2.0."""
    keys = settings_of(UNIT.read_text(encoding="utf-8"))
    expected = {
        "DynamicUser": "yes", "ProtectSystem": "strict", "NoNewPrivileges": "yes", "ProtectHome": "yes",
        "PrivateTmp": "yes", "PrivateDevices": "yes", "StateDirectory": "triggergate",
        "Restart": "on-failure", "CapabilityBoundingSet": "",
    }  # fmt: skip
    assert {k: keys.get(k, [None])[-1] for k in expected} == expected
    unit = tmp_path / "triggergate.service"
    unit.write_text(UNIT.read_text(encoding="utf-8").replace(INSTALLED, HERE), encoding="utf-8")
    argv = [require_binary("systemd-analyze"), "security", "--offline=yes", "--no-pager", str(unit)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    level = re.search(r"Overall exposure level for triggergate\.service: ([\d.]+)", done.stdout + done.stderr)
    assert level, done.stdout[-1500:]
    assert float(level[1]) < 2.0, done.stdout


def test_the_unit_gives_the_server_longer_than_its_drain_to_stop() -> None:
    """TimeoutStopSec is longer than serve's drain with the default timeouts, and SIGTERM
    reaches the supervisor, which stops its workers itself."""
    keys = settings_of(UNIT.read_text(encoding="utf-8"))
    assert keys.get("KillSignal", ["SIGTERM"]) == ["SIGTERM"] and keys["KillMode"] == ["mixed"]
    assert int(keys["TimeoutStopSec"][0]) > drain_seconds(Settings())


def test_the_units_command_serves_behind_the_shipped_nginx_and_trusts_only_it(tmp_path: Path) -> None:
    """The unit's command and environment, with the configuration the README installs,
    serve where the shipped nginx config proxies to, keep the SQLite store in the working
    (state) directory, and believe X-Forwarded-For from 127.0.0.1 (nginx)."""
    keys = settings_of(UNIT.read_text(encoding="utf-8"))
    argv = shlex.split(keys["ExecStart"][0])
    host, port = argv[argv.index("--host") + 1], argv[argv.index("--port") + 1]
    assert f"server {host}:{port};" in NGINX.read_text(encoding="utf-8")
    env = dict(value.split("=", 1) for value in keys["Environment"])
    assert env["TRIGGERGATE_TRUSTED_PROXIES"] == f"{host}/32"
    commands = readme_commands()
    assert ["sudo", "python3", "-m", "venv", INSTALLED.removesuffix("/bin/triggergate")] in commands
    [install] = [c for c in commands if c[-1] == env["TRIGGERGATE_CONFIG"]]
    assert any(c[-2:] == ["deploy/systemd/triggergate.service", "/etc/systemd/system/"] for c in commands)
    assert any(c[-2:] == [str(NGINX.relative_to(ROOT)), "/etc/nginx/conf.d/"] for c in commands)
    config = tmp_path / "triggergate.toml"
    config.write_text((ROOT / install[-2]).read_text(encoding="utf-8"), encoding="utf-8")
    state = tmp_path / "state"
    state.mkdir()
    mine = free_port()
    argv = [HERE, *argv[1:]]
    argv[argv.index("--port") + 1] = str(mine)
    proc = subprocess.Popen(
        argv,
        cwd=state,
        env={"PATH": "/usr/bin:/bin", **env, "TRIGGERGATE_CONFIG": str(config)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        url = f"http://{host}:{mine}"
        wait_healthy(url, timeout=60)
        seen = httpx.get(f"{url}/quota", headers={"X-Forwarded-For": "203.0.113.9"}, timeout=10).json()
        assert seen["client"] == "203.0.113.9"
        assert httpx.post(f"{url}/trigger", timeout=30).status_code == 202
        assert (state / "triggergate.db").is_file()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the supervisor and its four workers
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

"""Schemathesis against the real server's /openapi.json: no 5xx, every answer as documented."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hardening.support import base_env, serving

pytestmark = [pytest.mark.slow, pytest.mark.sqlite]

CONFIG = """
[params.ref]
pattern = '^[a-z0-9][a-z0-9._/-]{0,62}$'
[params.env]
choices = ["staging", "production"]
default = "staging"
"""


def test_schemathesis_all_checks_over_1000_cases_find_nothing(tmp_path: Path) -> None:
    """``schemathesis run --checks all`` (coverage, fuzzing and stateful phases) generates at
    least 1,000 cases against a live server with parameters configured, and none fails."""
    (tmp_path / "gate.toml").write_text(CONFIG)
    env = base_env(tmp_path, TRIGGERGATE_PIPELINE="noop://", TRIGGERGATE_CONFIG=str(tmp_path / "gate.toml"))
    with serving(tmp_path, env) as server:
        run = subprocess.run(
            [
                str(Path(sys.executable).with_name("schemathesis")),
                "run",
                f"{server.url}/openapi.json",
                "--checks",
                "all",
                "--max-examples",
                "160",
                "--no-color",
                "--seed",
                "20261126",
            ],
            capture_output=True,
            text=True,
            timeout=240,
            cwd=tmp_path,
        )
    out = run.stdout + run.stderr
    match = re.search(r"(\d+) generated, (\d+) passed", out)
    assert run.returncode == 0 and match, out[-4000:]
    assert int(match[1]) >= 1000 and match[1] == match[2], match[0]
    print(match[0])

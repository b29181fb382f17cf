"""The one list of system binaries: what tests require is what the setup installs."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.servers._process import SYSTEM_DEPS, require_binary, system_deps

ROOT = Path(__file__).resolve().parents[1]
_REQUIRED = re.compile(r"""require_binary\(\s*["']([A-Za-z0-9_.+-]+)["']""")


def test_every_binary_a_test_requires_is_in_the_list() -> None:
    """A test can only require a binary the setup script installs; a new one must be listed."""
    required = {name for path in ROOT.glob("tests/**/*.py") for name in _REQUIRED.findall(path.read_text())}
    assert required, "no require_binary call found: the scan itself is broken"
    assert required <= set(system_deps()), sorted(required - set(system_deps()))


def test_every_listed_binary_is_installed_here() -> None:
    """After `make test`'s setup, each listed binary resolves (the setup installed it)."""
    for name in system_deps():
        assert Path(require_binary(name)).is_file(), name


def test_the_setup_script_reads_the_list_and_finds_nothing_missing() -> None:
    """The script installs from the list itself (no second, hard-coded list) and exits 0 here."""
    script = ROOT / "scripts" / "system-deps.sh"
    text = script.read_text()
    assert SYSTEM_DEPS.name in text
    assert re.findall(r"need\+=\(([^)]*)\)", text) == ['"$package"'], "a package is hard-coded"
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "installing" not in done.stdout

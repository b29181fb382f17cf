"""Build the image the README's way, over the local base, with this machine's pip setup.

This machine inspects HTTPS with its own certificate authority, so pip inside the build
gets the host's CA bundle as a build secret (``--build-arg PIP_CERT=/run/secrets/ca``;
the Containerfile defaults to the image's own bundle). pip inside the build also asks
the package indexes the host's pip asks: the host's pip configuration (files and
``PIP_*`` variables, as ``pip config list`` reports them) becomes a pip.conf passed as
a build secret. Local indexes (``file://``, paths) are left out: a build cannot see the
host's disk, and the network index the host uses (PyPI unless configured) serves the
same pinned versions.
"""

from __future__ import annotations

import ast
import os
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.deploy.base_image import ROOT, base_tar, release
from tests.deploy.podman import Podman
from tests.deploy.readme import blocks, rewrite

# pip options that say where packages come from and how to reach them.
INDEX_OPTIONS = (
    "index-url",
    "extra-index-url",
    "find-links",
    "trusted-host",
    "timeout",
    "default-timeout",
    "retries",
    "proxy",
)
LOCAL = ("file:", "/", ".")


@dataclass(frozen=True)
class Image:
    """The image the suite built: its reference and what building it cost."""

    ref: str
    seconds: float


def host_pip_config() -> dict[str, str]:
    """The host pip's effective settings (later sources win, the environment last)."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    settings: dict[str, str] = {}
    env: dict[str, str] = {}
    for line in done.stdout.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        section, _, name = key.rpartition(".")
        (env if section == ":env:" else settings)[name] = ast.literal_eval(value)
    return {**settings, **env}


def host_ca_bundle(pip: dict[str, str]) -> Path:
    """The CA bundle the host's pip trusts: its ``cert`` setting, else OpenSSL's default."""
    path = Path(pip.get("cert") or ssl.get_default_verify_paths().openssl_cafile)
    assert path.is_file(), f"no CA bundle at {path}"
    return path


def build_pip_conf(pip: dict[str, str], folder: Path) -> Path | None:
    """A pip.conf with the host's network indexes, for the build; None when there is nothing."""
    lines = []
    for name in INDEX_OPTIONS:
        values = [v for v in pip.get(name, "").split() if not v.startswith(LOCAL)]
        if values:
            lines.append(f"{name} = {' '.join(values)}")
    if not lines:
        return None
    path = folder / "pip.conf"
    path.write_text("[global]\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return path


def build_image(podman: Podman, folder: Path, tag: str) -> Image:
    """Import the cached base, then run the README's build command with the test's extras."""
    suite = release()
    base = f"localhost/{tag}-base:{suite}"
    podman.owns("images", base)
    podman("import", str(base_tar(suite)), base, timeout=300)
    pip = host_pip_config()
    extras = [
        f"--build-arg=BASE={base}",
        "--pull=never",  # no registry here: the base is local, never fetched
        "--layers=false",  # no intermediate images left behind
        f"--secret=id=ca,src={host_ca_bundle(pip)}",
        "--build-arg=PIP_CERT=/run/secrets/ca",
    ]
    conf = build_pip_conf(pip, folder)
    if conf is not None:
        extras.append(f"--secret=id=pipconf,src={conf}")
    [build] = [c for c in blocks("Container image")[0] if c.program == "podman build"]
    argv = rewrite(build.argv, {"triggergate": tag}, ROOT)
    ref = f"localhost/{tag}:latest"
    podman.owns("images", ref)
    started = time.monotonic()
    podman(*argv[1:2], *extras, *argv[2:], timeout=900, cwd=ROOT)
    return Image(ref, time.monotonic() - started)


def session_tag() -> str:
    """A name no one else uses: the suite's own, with this process's id."""
    return f"triggergate-test-{os.getpid()}"

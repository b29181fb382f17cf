"""A Debian slim base image without a registry: debootstrap from this machine's apt mirror.

No container registry is reachable from the test machines, so the suite cannot pull
``debian:bookworm-slim``. It bootstraps the same release (``--variant=minbase``) from the
mirror the machine's apt sources name, trims it the way Debian's official slim images
are trimmed, and imports the tar. The tar is cached under ``.cache/deploy/`` (ignored by
git) so later runs skip the bootstrap (~40 s).

The trimming follows debuerreotype, the tool the official images are built with:
``scripts/.slimify-excludes`` / ``.slimify-includes`` (documentation, man pages and
locales are left out, copyright files kept) and ``scripts/debuerreotype-minimizing-config``
(no service starts during builds, no apt caches kept, no translations fetched).
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from tests.servers._process import require_binary

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "deploy"
CONTAINERFILE = ROOT / "Containerfile"
APT_SOURCES = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
SLIM_EXCLUDES = [
    "usr/share/doc/*",
    "usr/share/groff/*",
    "usr/share/info/*",
    "usr/share/linda/*",
    "usr/share/lintian/overrides/*",
    "usr/share/locale/*",
    "usr/share/man/*",
]
SLIM_INCLUDES = ["usr/share/doc/*/copyright", "usr/share/locale/locale.alias"]
MINIMIZING = {
    "usr/sbin/policy-rc.d": "#!/bin/sh\n# No service starts inside an image build.\nexit 101\n",
    "etc/dpkg/dpkg.cfg.d/docker-apt-speedup": "force-unsafe-io\n",
    "etc/dpkg/dpkg.cfg.d/docker-slim": "".join(
        [f"path-exclude /{p}\n" for p in SLIM_EXCLUDES] + [f"path-include /{p}\n" for p in SLIM_INCLUDES]
    ),
    "etc/apt/apt.conf.d/docker-clean": (
        'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };\n'
        'APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };\n'
        'Dir::Cache::pkgcache "";\nDir::Cache::srcpkgcache "";\n'
    ),
    "etc/apt/apt.conf.d/docker-gzip-indexes": 'Acquire::GzipIndexes "true";\n',
    "etc/apt/apt.conf.d/docker-no-languages": 'Acquire::Languages "none";\n',
}


def release() -> str:
    """The Debian release of the Containerfile's default base (``debian:bookworm-slim``)."""
    found = re.search(r"^ARG BASE=\S*debian:(\w+)-slim$", CONTAINERFILE.read_text(), re.M)
    assert found, "the Containerfile's ARG BASE is no longer a debian:<release>-slim image"
    return found.group(1)


def _sources(path: Path) -> list[tuple[str, list[str], list[str], str | None]]:
    """(URI, suites, components, keyring) of each enabled ``deb`` source in one apt file.

    Both formats: deb822 stanzas (*.sources) and one-line ``deb URI SUITE COMPONENTS``
    (sources.list, *.list).
    """
    text = path.read_text(encoding="utf-8", errors="replace")
    found = []
    if path.suffix == ".sources":
        for stanza in re.split(r"\n\s*\n", text):
            fields = dict(re.findall(r"^([A-Za-z-]+):[ \t]*(.*)$", stanza, re.M))
            enabled = fields.get("Enabled", "yes").lower() != "no"
            if enabled and "deb" in fields.get("Types", "").split() and fields.get("URIs"):
                found.append(
                    (
                        fields["URIs"].split()[0],
                        fields.get("Suites", "").split(),
                        fields.get("Components", "").split(),
                        fields.get("Signed-By") or None,
                    )
                )
        return found
    for line in text.splitlines():
        words = re.sub(r"\[[^]]*]", "", line.split("#", 1)[0]).split()  # options like [arch=amd64]
        if len(words) >= 4 and words[0] == "deb":
            found.append((words[1], [words[2]], words[3:], None))
    return found


def debian_mirror(suite: str) -> tuple[str, str | None]:
    """(URI, keyring) of the first apt source serving ``suite`` main: the machine's own
    Debian mirror, never a hard-coded host."""
    for path in APT_SOURCES:
        if path.is_file() and path.suffix in (".list", ".sources"):
            for uri, suites, components, keyring in _sources(path):
                if suite in suites and "main" in components:
                    return uri, keyring
    raise AssertionError(f"no apt source serves Debian {suite!r} (looked in /etc/apt/sources.list*)")


def _slim(rootfs: Path) -> None:
    for relative, text in MINIMIZING.items():
        target = rootfs / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        target.chmod(0o755 if relative.endswith("policy-rc.d") else 0o644)
    for pattern in SLIM_EXCLUDES:
        for top in rootfs.glob(pattern):
            paths = [top] if not top.is_dir() or top.is_symlink() else sorted(top.rglob("*"), reverse=True)
            for path in paths:
                relative = str(path.relative_to(rootfs))
                if any(fnmatch.fnmatch(relative, keep) for keep in SLIM_INCLUDES):
                    continue
                if path.is_dir() and not path.is_symlink():
                    if not any(path.iterdir()):
                        path.rmdir()
                else:
                    path.unlink()
            if top.is_dir() and not top.is_symlink() and not any(top.iterdir()):
                top.rmdir()
    for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for path in (rootfs / leftover).glob("*"):
            if path.is_file():
                path.unlink()


def base_tar(suite: str) -> Path:
    """The cached slim root file system of ``suite`` as a tar; bootstrapped when absent."""
    cached = CACHE / f"debian-{suite}-slim.tar"
    if cached.is_file():
        return cached
    debootstrap = require_binary("debootstrap")
    mirror, keyring = debian_mirror(suite)
    CACHE.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bootstrap-", dir=CACHE))
    try:
        rootfs = work / "rootfs"
        argv = [debootstrap, "--variant=minbase", *([f"--keyring={keyring}"] if keyring else [])]
        done = subprocess.run(
            [*argv, suite, str(rootfs), mirror], capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, f"debootstrap failed:\n{done.stdout[-3000:]}\n{done.stderr[-2000:]}"
        _slim(rootfs)
        partial = work / "rootfs.tar"
        with tarfile.open(partial, "w") as tar:
            for entry in sorted(os.listdir(rootfs)):
                tar.add(rootfs / entry, arcname=entry)
        os.replace(partial, cached)  # atomic: a run cut short leaves no half tar behind
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return cached

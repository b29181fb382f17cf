"""The README's Deploy section as the tests run it: its shell blocks, command by command.

The deploy tests take their commands from here instead of keeping their own copies,
so the copy-paste commands a reader runs are the ones the suite proved. The only
changes are the ones a test on a shared machine needs: its own names for images,
containers and volumes, free loopback ports, and the build's test-only arguments.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


@dataclass(frozen=True)
class Command:
    """One command of a shell block: its text (continuations joined) and its argv."""

    text: str
    argv: tuple[str, ...]

    @property
    def program(self) -> str:
        words = [w for w in self.argv if not re.match(r"^[A-Z_]+=", w)]  # skip VAR=value prefixes
        return " ".join(words[:2]) if words and words[0] in ("podman", "docker") else words[0]


def deploy_section(title: str) -> str:
    """The text of ``### title`` inside the README's ``## Deploy`` section."""
    text = README.read_text(encoding="utf-8")
    deploy = re.search(r"^## Deploy\n(.*?)(?=^## )", text, re.M | re.S)
    assert deploy, "the README has no '## Deploy' section"
    found = re.search(rf"^### {re.escape(title)}\n(.*?)(?=^### |\Z)", deploy.group(1), re.M | re.S)
    assert found, f"the README's Deploy section has no '### {title}'"
    return found.group(1)


def blocks(title: str) -> list[list[Command]]:
    """Every ```sh block of the subsection, as commands (comments and blank lines dropped)."""
    out = []
    for body in re.findall(r"^```sh\n(.*?)^```", deploy_section(title), re.M | re.S):
        joined = re.sub(r"\\\n\s*", " ", body)
        commands = []
        for line in joined.splitlines():
            argv = tuple(shlex.split(line, comments=True))
            if argv:
                commands.append(Command(line.split("  #", 1)[0].strip(), argv))
        out.append(commands)
    assert out, f"no sh block under '### {title}'"
    return out


def rewrite(argv: tuple[str, ...], names: dict[str, str], cwd: Path) -> list[str]:
    """``argv`` with the test's names (whole words, or the name part of ``NAME:/path``)
    and ``$PWD`` as ``cwd``."""
    out = []
    for word in argv:
        word = word.replace("$PWD", str(cwd))
        head, sep, tail = word.partition(":")
        if word in names:
            word = names[word]
        elif sep and head in names:
            word = names[head] + sep + tail
        out.append(word)
    return out


def publish(argv: list[str], port: int) -> list[str]:
    """The ``-p 127.0.0.1:HOST:8080`` of a run command, moved to the free host ``port``."""
    out = list(argv)
    for i, word in enumerate(out[:-1]):
        if word in ("-p", "--publish"):
            address, _, inner = out[i + 1].rpartition(":")
            host, _, _ = address.rpartition(":")
            assert host == "127.0.0.1", f"the README publishes on {address!r}: loopback only"
            out[i + 1] = f"{host}:{port}:{inner}"
    return out

"""A port that accepts connections and never answers: a store that hangs, not one that is down.

A closed port fails at once (connection refused); this one lets a client connect
and send its request, then leaves it waiting for a reply that never comes, the
way an unreachable endpoint behind a dropping firewall or a stalled server does.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass
class Blackhole:
    """The port, and how many connections it has swallowed."""

    port: int
    accepted: int = 0
    _held: list[socket.socket] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.contextmanager
def blackhole() -> Iterator[Blackhole]:
    """Listen on a free 127.0.0.1 port for the block, holding every connection open unread."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    listener.settimeout(0.2)
    hole = Blackhole(listener.getsockname()[1])
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            hole.accepted += 1
            hole._held.append(conn)

    thread = threading.Thread(target=accept, name="blackhole", daemon=True)
    thread.start()
    try:
        yield hole
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()
        for conn in hole._held:
            conn.close()


def closed_port() -> int:
    """A 127.0.0.1 port nothing listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port

"""Named fault-injection points for the hardening tests; inert in production.

``TRIGGERGATE_TEST_FAULTS`` enables them: a comma-separated list of
``point=action`` or ``point=action@N`` (fire on the N-th pass, default the
first). Actions: ``kill`` (SIGKILL this process: a power cut, no cleanup) and
``raise`` (an unexpected exception). Example:
``TRIGGERGATE_TEST_FAULTS=after_reserve=kill@3,before_response=raise``.

Without the variable the table is empty and :func:`point` is one dict lookup
on an empty dict. The variable is read once, at import, so a running server
cannot be switched into fault mode.

Points used by the service: ``after_reserve`` (slot held, nothing started),
``after_start`` (run started, nothing recorded), ``after_commit`` (audit and
settle written, no response yet), ``before_response`` (outcome built).
"""

from __future__ import annotations

import os
import signal

ENV = "TRIGGERGATE_TEST_FAULTS"
ACTIONS = frozenset({"kill", "raise"})


class InjectedFault(RuntimeError):
    """Raised at a point configured with ``raise``."""


def _parse(text: str) -> dict[str, tuple[str, int]]:
    table: dict[str, tuple[str, int]] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, spec = item.partition("=")
        action, _, nth = spec.partition("@")
        if action not in ACTIONS or (nth and not nth.isdigit()):
            raise ValueError(f"{ENV}: {item!r} is not point=kill|raise[@N]")
        table[name.strip()] = (action, int(nth or 1))
    return table


_TABLE = _parse(os.environ.get(ENV, ""))
_PASSES: dict[str, int] = {}


def point(name: str) -> None:
    """Fire the fault configured for ``name``, if any, on its N-th pass."""
    if not _TABLE:
        return
    fault = _TABLE.get(name)
    if fault is None:
        return
    action, nth = fault
    _PASSES[name] = _PASSES.get(name, 0) + 1
    if _PASSES[name] != nth:
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise InjectedFault(f"fault injected at {name}")

"""Which alerts go out now, which fold into a digest: a flood must not flood the operator.

Per process, in memory (a restart at worst sends one alert too many):

- ``accepted`` alerts beyond ``rate`` per ``window`` are held; when the window
  ends, one digest alert says how many were held and names a few run ids;
- an alert whose text, without the per-run lines (client, run id, time), was
  already sent within ``dedup`` seconds is held and counted; the digest names
  the repeat count. ``budget_exhausted`` is already once per window in the store.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from triggergate.clock import Clock
from triggergate.notifiers.base import Alert

PER_RUN_LINES = ("Client:", "Run ID:", "Execution ID:", "Time:")
NAMED_RUNS = 10


def fingerprint(alert: Alert) -> str:
    """The alert's identity for de-duplication: its text without the per-run lines."""
    lines = [line for line in alert.body.splitlines() if not line.startswith(PER_RUN_LINES)]
    return "\n".join([alert.event, alert.subject, *lines])


@dataclass
class AlertPolicy:
    """Rate limit for ``accepted`` alerts and a de-duplication window for the rest."""

    clock: Clock
    rate: int = 0  # accepted alerts sent per window; 0 = no limit
    window: float = 60.0
    dedup: float = 0.0  # seconds an identical alert is held back; 0 = off
    _window_start: float = float("-inf")
    _sent_in_window: int = 0
    _held_runs: list[str] = field(default_factory=list)
    _held_accepted: int = 0
    _last_sent: dict[str, float] = field(default_factory=dict)
    _repeats: Counter[str] = field(default_factory=Counter)
    _subjects: dict[str, str] = field(default_factory=dict)

    def admit(self, alert: Alert) -> bool:
        """Whether ``alert`` goes out now; a held one is counted for the next digest."""
        now = self.clock()
        if alert.event == "accepted" and self.rate:
            if now - self._window_start >= self.window:
                self._window_start, self._sent_in_window = now, 0
            if self._sent_in_window >= self.rate:
                self._held_accepted += 1
                if len(self._held_runs) < NAMED_RUNS:
                    self._held_runs.append(alert.attributes.get("run_id", "?"))
                return False
            self._sent_in_window += 1
            return True
        if self.dedup and alert.event != "digest":
            key = fingerprint(alert)
            last = self._last_sent.get(key)
            if last is not None and now - last < self.dedup:
                self._repeats[key] += 1
                self._subjects[key] = alert.subject
                return False
            self._last_sent[key] = now
            if len(self._last_sent) > 1000:  # bounded: forget the oldest
                oldest = min(self._last_sent, key=self._last_sent.__getitem__)
                del self._last_sent[oldest]
        return True

    def digests(self) -> list[Alert]:
        """Digest alerts for windows that have ended (call from the delivery loop)."""
        now = self.clock()
        out: list[Alert] = []
        if self._held_accepted and now - self._window_start >= self.window:
            out.append(
                Alert(
                    event="digest",
                    subject=f"{self._held_accepted} more pipeline triggers (digest)",
                    body=(
                        f"{self._held_accepted} accepted triggers beyond {self.rate} per "
                        f"{int(self.window)} s were not alerted one by one.\n"
                        f"Some run ids: {', '.join(self._held_runs)}"
                    ),
                    attributes={"event": "digest", "held": str(self._held_accepted)},
                )
            )
            self._held_accepted, self._held_runs = 0, []
        for key, count in list(self._repeats.items()):
            if now - self._last_sent.get(key, now) >= self.dedup:
                out.append(
                    Alert(
                        event="digest",
                        subject=f"[repeated {count}x] {self._subjects.pop(key, '')}",
                        body=f"The alert below repeated {count} more time(s) in "
                        f"{int(self.dedup)} s and was sent once.\n\n{key}",
                        attributes={"event": "digest", "repeated": str(count)},
                    )
                )
                del self._repeats[key]
        return out

"""One JSON object per line on stderr (CloudWatch-ready), via python-json-logger."""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

MAX_MESSAGE = 2048


class _Bounded(JsonFormatter):
    """JSON lines whose message and values are cut to a bounded size."""

    def process_log_record(self, log_data: dict[str, object]) -> dict[str, object]:
        for key, value in log_data.items():
            if isinstance(value, str) and len(value) > MAX_MESSAGE:
                log_data[key] = value[:MAX_MESSAGE] + "…"
        return log_data


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        _Bounded(
            "{asctime}{levelname}{name}{message}",
            style="{",
            rename_fields={"levelname": "level", "asctime": "time", "name": "logger"},
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs request URLs at INFO; some hook URLs carry their secret in the path.
    for noisy in ("uvicorn.access", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

"""A tiny run of bench/ so `make bench` cannot rot; it measures nothing and times nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bench import report, run

from tests.servers._process import require_binary

pytestmark = pytest.mark.slow


def test_every_configuration_serves_requests_and_the_report_renders(tmp_path: Path) -> None:
    """Each configuration answers some requests as expected, and the Markdown holds every section."""
    # make test installs both (scripts/system-deps.txt); a missing one fails the test.
    require_binary("wrk")
    require_binary("redis-server")
    out, raw = tmp_path / "benchmarks.md", tmp_path / "results.json"
    argv = ["--quick", "--duration", "1", "--warmup", "0", "--big-pool", "3000"]
    assert run.main([*argv, "--footprint-sample", "50", "--out", str(out), "--json", str(raw)]) == 0
    results = json.loads(raw.read_text())
    summary = results["summary"]
    assert {s["server"] for s in summary} == set(run.SERVERS)
    assert len(summary) == len(run.configs(1000, 3000))
    for row in results["runs"]:
        assert row["requests"] > 0, row["label"]
        assert row["expected"] > 0, row["label"]
    text = out.read_text()
    assert report.MARKER in text
    for section in ("## Requests per second", "## Memory", "## Targets (issue 6)"):
        assert section in text
    assert "bare Starlette (ceiling)" in text


def test_the_report_keeps_the_hand_written_top(tmp_path: Path) -> None:
    """Regenerating keeps everything above the marker and replaces what is below it."""
    out = tmp_path / "benchmarks.md"
    out.write_text(f"# Hand-written\n\nmethod\n\n{report.MARKER}\n\nold figures\n")
    results = {
        "machine": {"cpu": "x", "cores": "2", "kernel": "k", "python": "3.11"},
        "settings": {"reps": 1, "duration": 1, "warmup": 0, "small_pool": 10, "big_pool": 20},
        "memory": {},
        "summary": [],
        "profiles": {"p": [("frame (file.py:1)", 0.5)]},
        "elapsed": 1.0,
    }
    report.write(results, out)
    text = out.read_text()
    assert text.startswith("# Hand-written\n\nmethod\n\n")
    assert "old figures" not in text
    assert "50.0% frame (file.py:1)" in text


def test_top_frames_counts_self_time() -> None:
    """py-spy raw stacks are folded by their leaf frame, as shares of all samples."""
    raw = "a;b;c 2\na;c 1\na;b 5\n"
    assert report.top_frames(raw) == [("b", 0.625), ("c", 0.375)]

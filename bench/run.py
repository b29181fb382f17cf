"""``python -m bench.run [--quick]``: every configuration in one run, A/B alternated, medians.

Servers run with one worker pinned to core 0; wrk (2 threads, 64 connections)
and redis-server share core 1. Each repetition runs every configuration once,
in reverse order on odd repetitions so slow drift of a shared machine cancels
out; each run is a warm-up followed by the measured run. Results go to
``docs/benchmarks.md`` (see :mod:`bench.report`).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import prefill, report
from bench.servers import ROOT, Proc, cpu_seconds, free_port, python, rss_kib, start, start_redis, wrk


@dataclass(frozen=True)
class Config:
    """One measured configuration: which server, which client script, what it should answer."""

    name: str
    server: str
    pool: int  # 0: a fresh address for every request
    expect: str  # "deny" or "accept"

    @property
    def label(self) -> str:
        return f"{self.name} @ {'fresh' if not self.pool else f'{self.pool:,}'}"


SERVERS = ("ceiling", "tg-sqlite", "tg-redis", "tg-redis-alone", "peer-memory", "peer-redis")


def configs(small: int, big: int, only: frozenset[str] = frozenset()) -> list[Config]:
    """Every configuration, or those whose server is in ``only`` (when given)."""
    deny = [
        Config(name, server, pool, "deny")
        for name, server in (
            ("triggergate SQLite deny", "tg-sqlite"),
            ("triggergate Redis deny", "tg-redis"),
            ("slowapi memory", "peer-memory"),
            ("slowapi Redis", "peer-redis"),
        )
        for pool in (small, big)
    ]
    every = [
        Config("bare Starlette (ceiling)", "ceiling", small, "deny"),
        *deny,
        # The same store sending every peek in its own round trip (?batch=1): batching's effect.
        Config("triggergate Redis deny, unbatched peeks", "tg-redis-alone", big, "deny"),
        Config("triggergate SQLite accept (noop://)", "tg-sqlite", 0, "accept"),
    ]
    return [c for c in every if not only or c.server in only]


def tg_env(workdir: Path, store: str, name: str) -> dict[str, str]:
    return {
        "TRIGGERGATE_STORE": store,
        "TRIGGERGATE_PIPELINE": "noop://",
        "TRIGGERGATE_NOTIFY": "",
        "TRIGGERGATE_TRUSTED_PROXIES": "127.0.0.1/32",
        "TRIGGERGATE_LIMITS": "3/7d",
        "TRIGGERGATE_COALESCE": "false",
        "TRIGGERGATE_STATE_DIR": str(workdir / f"state-{name}"),
        "TRIGGERGATE_LOG_LEVEL": "WARNING",
    }


class Bench:
    """The servers, the stores they use, and every measurement taken."""

    def __init__(self, workdir: Path, args: argparse.Namespace) -> None:
        self.workdir = workdir
        self.args = args
        self.procs: dict[str, Proc] = {}
        self.memory: dict[str, Any] = {}
        self.runs: list[dict[str, Any]] = []
        self.block = 0

    def setup(self) -> None:
        big, sample, work = self.args.big_pool, self.args.footprint_sample, self.workdir
        redis = start_redis(work)
        self.procs["redis"] = redis
        rurl = f"redis://127.0.0.1:{redis.port}"
        print(f"footprint through the store API, {sample:,} clients each", flush=True)
        self.memory["api_sqlite"] = prefill.footprint_sqlite(work / "sample.db", sample)
        self.memory["api_redis"] = prefill.footprint_redis(f"{rurl}/1", sample)
        print(f"recording {big:,} spent clients in SQLite and Redis", flush=True)
        db = work / "tg.db"
        prefill.sqlite_schema(db)
        empty = prefill.sqlite_size(db)
        took = prefill.sqlite_spent(db, big)
        self.memory["bulk_sqlite"] = {"before": empty, "after": prefill.sqlite_size(db), "seconds": took}
        with prefill.redis.Redis.from_url(f"{rurl}/0") as client:
            before, rss_before = prefill.redis_used(client), rss_kib(redis.pid)
            took = prefill.redis_spent(f"{rurl}/0", big)
            self.memory["bulk_redis"] = {
                "before": before,
                "after": prefill.redis_used(client),
                "rss_before_kib": rss_before,
                "rss_after_kib": rss_kib(redis.pid),
                "seconds": took,
            }
            if self.wanted("peer-redis"):
                before = prefill.redis_used(client)
                prefill.redis_peer(f"{rurl}/2", big)
                self.memory["bulk_peer_redis"] = {"before": before, "after": prefill.redis_used(client)}
        print("starting servers", flush=True)
        if self.wanted("ceiling"):
            self._start("ceiling", python("bench.ceiling"), {})
        if self.wanted("tg-sqlite"):
            self._start("tg-sqlite", python("triggergate", "serve"), tg_env(work, f"sqlite:///{db}", "s"))
        if self.wanted("tg-redis"):
            self._start("tg-redis", python("triggergate", "serve"), tg_env(work, f"{rurl}/0", "r"))
        if self.wanted("tg-redis-alone"):
            alone = tg_env(work, f"{rurl}/0?batch=1", "r1")
            self._start("tg-redis-alone", python("triggergate", "serve"), alone)
        if self.wanted("peer-memory"):
            rss_file = work / "peer-rss.json"
            peer = {"PEER_STORAGE": "memory://", "PEER_PREFILL": str(big), "PEER_RSS_FILE": str(rss_file)}
            self._start("peer-memory", python("bench.peer_slowapi"), peer)
            self.memory["peer_memory"] = json.loads(rss_file.read_text())
        if self.wanted("peer-redis"):
            self._start("peer-redis", python("bench.peer_slowapi"), {"PEER_STORAGE": f"{rurl}/2"})
        for name, proc in self.procs.items():
            self.memory.setdefault("start_rss_kib", {})[name] = rss_kib(proc.pid)

    def wanted(self, server: str) -> bool:
        return not self.args.only or server in self.args.only

    def _start(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        port = free_port()
        if name.startswith("tg-"):
            argv = [*argv, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
        else:
            argv = [*argv, "--port", str(port)]
        self.procs[name] = start(name, argv, env, self.workdir, port)

    def _wrk(self, config: Config, seconds: float) -> Any:
        proc = self.procs[config.server]
        if config.pool:
            return wrk(proc.port, "pool.lua", {"POOL": str(config.pool)}, seconds)
        self.block += 1
        return wrk(proc.port, "fresh.lua", {"BLOCK": str(self.block)}, seconds)

    def measure(self, config: Config, rep: int) -> None:
        proc = self.procs[config.server]
        if self.args.warmup > 0:
            self._wrk(config, self.args.warmup)
        cpu, rss = cpu_seconds(proc.pid), rss_kib(proc.pid)
        result = self._wrk(config, self.args.duration)
        cpu_used, rss_after = cpu_seconds(proc.pid) - cpu, rss_kib(proc.pid)
        expected = result.non2xx if config.expect == "deny" else result.requests - result.non2xx
        self.runs.append(
            {
                **asdict(config),
                "label": config.label,
                "rep": rep,
                "requests": result.requests,
                "rps": result.rps,
                "expected": expected,
                "errors": result.errors,
                "cpu_us": cpu_used / result.requests * 1e6 if result.requests else 0.0,
                "rss_before_kib": rss,
                "rss_after_kib": rss_after,
            }
        )
        print(f"  rep {rep} {config.label:48s} {result.rps:9.0f} req/s", flush=True)

    def profile(self, config: Config, seconds: float) -> list[tuple[str, float]]:
        """py-spy's top frames (share of samples, self time) while ``config`` runs."""
        proc = self.procs[config.server]
        out = self.workdir / f"profile-{config.server}.txt"
        spy = subprocess.Popen(
            [
                *(str(Path(python("x")[0]).parent / "py-spy"), "record", "-p", str(proc.pid)),
                *("-d", str(round(seconds)), "-f", "raw", "-o", str(out), "--nonblocking"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)
        self._wrk(config, seconds)
        spy.wait(timeout=seconds + 30)
        return report.top_frames(out.read_text() if out.exists() else "")

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.stop()


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Medians per configuration, in the order first seen."""
    labels = list(dict.fromkeys(r["label"] for r in runs))
    out = []
    for label in labels:
        mine = [r for r in runs if r["label"] == label]
        out.append(
            {
                "label": label,
                "name": mine[0]["name"],
                "server": mine[0]["server"],
                "pool": mine[0]["pool"],
                "expect": mine[0]["expect"],
                "rps": statistics.median(r["rps"] for r in mine),
                "rps_all": [round(r["rps"]) for r in mine],
                "cpu_us": statistics.median(r["cpu_us"] for r in mine),
                "rss_growth_kib": max(r["rss_after_kib"] - r["rss_before_kib"] for r in mine),
                "all_expected": all(r["expected"] == r["requests"] for r in mine),
                "errors": sum(r["errors"] for r in mine),
            }
        )
    return out


def machine() -> dict[str, str]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    versions = {}
    for package in ("triggergate", "starlette", "uvicorn", "fastapi", "slowapi", "limits", "redis"):
        try:
            from importlib.metadata import version

            versions[package] = version(package)
        except Exception:
            versions[package] = "missing"
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[0]
    redis_version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
    return {
        "cpu": model,
        "cores": str(
            len([ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("processor")])
        ),
        "kernel": platform.release(),
        "python": platform.python_version(),
        **versions,
        "wrk": wrk_version.strip(),
        "redis-server": redis_version.split()[2] if redis_version else "missing",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one repetition of 3 s runs")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--small-pool", type=int, default=1_000)
    parser.add_argument("--big-pool", type=int, default=1_000_000)
    parser.add_argument("--footprint-sample", type=int, default=5_000)
    parser.add_argument("--profile", type=float, default=8.0, help="seconds of py-spy per profile; 0 skips")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    parser.add_argument(
        "--only",
        type=lambda text: frozenset(filter(None, text.split(","))),
        default=frozenset(),
        help=f"comma-separated servers to measure (of {', '.join(SERVERS)}); default all",
    )
    args = parser.parse_args(argv)
    if args.only - set(SERVERS):
        parser.error(f"--only: unknown server(s) {', '.join(sorted(args.only - set(SERVERS)))}")
    if args.quick:
        args.duration, args.warmup, args.reps, args.profile = 3.0, 1.0, 1, 0.0
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tg-bench-") as folder:
        bench = Bench(Path(folder), args)
        try:
            bench.setup()
            plan = configs(args.small_pool, args.big_pool, args.only)
            for rep in range(1, args.reps + 1):
                for config in plan if rep % 2 else reversed(plan):
                    bench.measure(config, rep)
            summary = summarize(bench.runs)
            profiles = {}
            if args.profile > 0:
                for config in plan:
                    if config.server.startswith("tg-") and config.pool:
                        print(f"profiling {config.label}", flush=True)
                        profiles[config.label] = bench.profile(config, args.profile)
        finally:
            bench.stop()
    results = {
        "machine": machine(),
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "json", "only")},
        "memory": bench.memory,
        "runs": bench.runs,
        "summary": summary,
        "profiles": profiles,
        "elapsed": time.monotonic() - started,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1, default=str))
    report.write(results, args.out)
    print(f"wrote {args.out} in {results['elapsed']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

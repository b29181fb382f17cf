"""The command:// backend: starting, idempotency, lookup, configuration and parameters."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import threading
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.backends.command_support import (
    DUMP,
    backend,
    env_of,
    environ,
    script,
    status_doc,
    wait_final,
)
from triggergate.backends.base import Started, StartRequest, Status
from triggergate.backends.command import CommandBackend
from triggergate.errors import BackendRefused, ConfigurationError
from triggergate.registry import Context, backend_from_url


async def test_run_goes_from_queued_or_running_to_succeeded(tmp_path: Path) -> None:
    """A started run is seen running, then succeeded with exit code 0 and its output logged."""
    b = backend(script(tmp_path, "sleep 0.6\necho hello from the pipeline\n"), tmp_path)
    started = await b.start(StartRequest("run-ok", "c"))
    assert started.ref == "run-ok"
    assert started.state in ("queued", "running")
    seen = [s.state for s in await wait_final(b, "run-ok")]
    assert seen[-1] == "succeeded"
    assert "running" in seen
    order = ["queued", "running", "succeeded"]
    assert seen == sorted(seen, key=order.index)
    doc = status_doc(b, "run-ok")
    assert doc["exit_code"] == 0
    assert doc["started_at"] <= doc["ended_at"]
    assert "hello from the pipeline" in b.log_path("run-ok").read_text()
    assert (await b.status("run-ok")).url is None


async def test_failing_pipeline_is_failed_with_its_exit_code(tmp_path: Path) -> None:
    """A non-zero exit makes the run failed, with the exit code in status.json and the detail."""
    b = backend(script(tmp_path, "echo broken >&2\nexit 3\n"), tmp_path)
    await b.start(StartRequest("run-bad", "c"))
    final = (await wait_final(b, "run-bad"))[-1]
    assert final == Status("failed", detail="exit code 3")
    assert status_doc(b, "run-bad")["exit_code"] == 3
    assert "broken" in b.log_path("run-bad").read_text()


async def test_same_request_id_twice_starts_one_run(tmp_path: Path) -> None:
    """A second start with the same request id returns the same run and runs nothing more."""
    count = tmp_path / "count"
    b = backend(script(tmp_path, f'echo run >> "{count}"\n'), tmp_path)
    first = await b.start(StartRequest("run-once", "c"))
    second = await b.start(StartRequest("run-once", "c"))
    assert first.ref == second.ref == "run-once"
    await wait_final(b, "run-once")
    third = await b.start(StartRequest("run-once", "c"))
    assert third == Started(ref="run-once", state="succeeded")
    await asyncio.sleep(0.3)
    assert count.read_text().splitlines() == ["run"]


async def test_concurrent_starts_in_one_loop_run_once(tmp_path: Path) -> None:
    """Ten starts with one request id gathered on one event loop run the pipeline once."""
    count = tmp_path / "count"
    b = backend(script(tmp_path, f'echo run >> "{count}"\n'), tmp_path)
    results = await asyncio.gather(*(b.start(StartRequest("same", "c")) for _ in range(10)))
    assert {r.ref for r in results} == {"same"}
    await wait_final(b, "same")
    assert count.read_text().splitlines() == ["run"]


def test_concurrent_starts_from_ten_threads_run_once(tmp_path: Path) -> None:
    """Ten backends in ten threads, released together, starting one request id run it once."""
    count = tmp_path / "count"
    path = script(tmp_path, f'echo run >> "{count}"\n')
    barrier = threading.Barrier(10)

    def start_one() -> Started:
        own = backend(path, tmp_path)
        barrier.wait(timeout=10)
        return asyncio.run(own.start(StartRequest("raced", "c")))

    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        results = list(pool.map(lambda _: start_one(), range(10)))
    assert {r.ref for r in results} == {"raced"}
    asyncio.run(wait_final(backend(path, tmp_path), "raced"))
    assert count.read_text().splitlines() == ["run"]


async def test_find_returns_started_runs_and_none_for_others(tmp_path: Path) -> None:
    """find() knows a started request id (with its state) and returns None for unknown ones."""
    b = backend(script(tmp_path, "true\n"), tmp_path)
    await b.start(StartRequest("found", "c"))
    await wait_final(b, "found")
    assert await b.find("found") == Started(ref="found", state="succeeded")
    assert await b.find("missing") is None
    assert await b.find("../found") is None


async def test_unknown_and_malformed_refs_are_unknown(tmp_path: Path) -> None:
    """status() of a never-started or path-like ref is unknown; log_path refuses a malformed ref."""
    b = backend(script(tmp_path, "true\n"), tmp_path)
    (tmp_path / "runs").mkdir()
    assert await b.status("never") == Status("unknown")
    for ref in ("..", "../runs", "a/b", ".hidden", ""):
        assert await b.status(ref) == Status("unknown")
        with pytest.raises(ValueError, match="not a run reference"):
            b.log_path(ref)
    with pytest.raises(BackendRefused):
        await b.start(StartRequest("../escape", "c"))
    assert not (tmp_path / "escape").exists()


async def test_pipeline_environment_is_exactly_the_minimal_set(tmp_path: Path) -> None:
    """The pipeline sees PATH, LANG, HOME, the run id, the ref and its params; no server secret."""
    dump = tmp_path / "dump.json"
    path = script(tmp_path, DUMP, "dump.py", bash=False)
    secrets = {"TRIGGERGATE_ADMIN_TOKEN": "s3cret", "AWS_SECRET_ACCESS_KEY": "k"}
    url = f"command://{path}?arg={quote(str(dump))}"
    ctx = Context(state_dir=tmp_path, environ=environ(tmp_path, **secrets))
    b = backend_from_url(url, ctx)
    await b.start(StartRequest("run-env", "c", {"env": "prod", "Dry_Run": "1"}, ref="main"))
    assert isinstance(b, CommandBackend)
    assert (await wait_final(b, "run-env"))[-1].state == "succeeded"
    assert env_of(dump) == {
        b"PATH": os.environ["PATH"].encode(),
        b"LANG": b"C.UTF-8",
        b"HOME": str(tmp_path).encode(),
        b"TRIGGERGATE_RUN_ID": b"run-env",
        b"TRIGGERGATE_REF": b"main",
        b"TRIGGERGATE_PARAM_ENV": b"prod",
        b"TRIGGERGATE_PARAM_DRY_RUN": b"1",
    }


HOSTILE = {
    "subst": "$(touch {canary})",
    "tick": "`touch {canary}`",
    "chain": "x; touch {canary} #",
    "crlf": "line1\r\nline2\n",
    "quotes": "'single' \"double\" \\back",
    "glob": "* ${{HOME}} %s %n",
    "unicode": "ünïcødé ✓ \u202e",
    "empty": "",
    "long": "y" * 1024,
}


async def test_hostile_values_arrive_byte_exact_and_nothing_executes(tmp_path: Path) -> None:
    """Shell syntax, CR/LF and quotes in params, ref and args reach the pipeline verbatim, unrun."""
    canary = tmp_path / "canary"
    dump = tmp_path / "dump.json"
    path = script(tmp_path, DUMP, "dump.py", bash=False)
    params = {name: value.format(canary=canary) for name, value in HOSTILE.items()}
    args = [str(dump), f"$(touch {canary})", "a b", "x+y", "--flag=;|&"]
    url = f"command://{path}?" + "&".join(f"arg={quote(a, safe='')}" for a in args)
    url = url.replace("x%2By", "x+y")  # a literal + in the URL stays a plus
    b = backend_from_url(url, Context(state_dir=tmp_path, environ=environ(tmp_path)))
    assert isinstance(b, CommandBackend)
    await b.start(StartRequest("run-hostile", "c", params, ref=f"`touch {canary}`"))
    assert (await wait_final(b, "run-hostile"))[-1].state == "succeeded"
    env = env_of(dump)
    for name, value in params.items():
        assert env[f"TRIGGERGATE_PARAM_{name.upper()}".encode()] == value.encode()
    assert env[b"TRIGGERGATE_REF"] == f"`touch {canary}`".encode()
    argv = [bytes.fromhex(a) for a in json.loads(dump.read_text())["argv"]]
    assert argv == [a.encode() for a in args[1:]]
    assert not canary.exists()


@pytest.mark.parametrize(
    ("params", "ref"),
    [
        ({"1abc": "v"}, None),
        ({"a-b": "v"}, None),
        ({"": "v"}, None),
        ({"x" * 65: "v"}, None),
        ({"name\n": "v"}, None),
        ({"ok": "nul\x00byte"}, None),
        ({"ok": "z" * 1025}, None),
        ({"ok": "\udc80"}, None),
        ({"mode": "a", "MODE": "b"}, None),
        ({}, "nul\x00ref"),
    ],
)
async def test_bad_parameters_are_refused_before_anything_starts(
    tmp_path: Path, params: dict[str, str], ref: str | None
) -> None:
    """A forbidden name or value is a definite BackendRefused, and no run folder is made."""
    b = backend(script(tmp_path, "true\n"), tmp_path)
    with pytest.raises(BackendRefused) as caught:
        await b.start(StartRequest("refused", "c", params, ref=ref))
    assert caught.value.definite
    assert not (tmp_path / "runs" / "refused").exists()


def test_url_args_timeout_and_name_are_parsed(tmp_path: Path) -> None:
    """Repeated ``arg`` keep their order, %XX decodes, + stays literal; name defaults to file."""
    path = script(tmp_path, "true\n", "deploy-it")
    b = backend(path, tmp_path, "arg=--flag&arg=a%20b&arg=x+y&arg=&timeout=2.5")
    assert b.args == ("--flag", "a b", "x+y", "")
    assert b.timeout == 2.5
    assert b.name == "deploy-it"
    assert backend(path, tmp_path).timeout == 900
    assert backend(path, tmp_path, "name=demo").name == "demo"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("command://relative/script", "relative"),
        ("command://", "''"),
        ("command:///no/such/executable", "/no/such/executable"),
        ("command://{dir}", "{dir}"),
        ("command://{plain}", "{plain}"),
        ("command://{exe}?timeout=0", "'0'"),
        ("command://{exe}?timeout=-5", "'-5'"),
        ("command://{exe}?timeout=soon", "'soon'"),
        ("command://{exe}?timeout=inf", "'inf'"),
        ("command://{exe}?timeout=1&timeout=2", "'timeout'"),
        ("command://{exe}?shell=1", "'shell'"),
        ("command://{exe}?name=", "empty name"),
        ("command://{exe}?arg=a%00b", "NUL"),
    ],
)
def test_bad_url_raises_configuration_error_naming_key_and_value(
    tmp_path: Path, url: str, shown: str
) -> None:
    """Each invalid URL is a ConfigurationError for key "pipeline" that shows the bad value."""
    exe = script(tmp_path, "true\n")
    plain = tmp_path / "plain.txt"
    plain.write_text("not executable\n")
    url = url.format(exe=exe, dir=tmp_path, plain=plain)
    shown = shown.format(dir=tmp_path, plain=plain)
    with pytest.raises(ConfigurationError) as caught:
        backend_from_url(url, Context(state_dir=tmp_path))
    assert caught.value.key == "pipeline"
    assert caught.value.value == url
    message = str(caught.value)
    assert message.startswith("pipeline: ")
    assert shown in message
    assert url in message
    assert "allowed: " in message


async def test_unstartable_executable_is_a_definite_refusal(tmp_path: Path) -> None:
    """An executable whose interpreter is missing is refused (definite) and its run is failed."""
    b = backend(script(tmp_path, "#!/nonexistent/interpreter\n", bash=False), tmp_path)
    with pytest.raises(BackendRefused) as caught:
        await b.start(StartRequest("run-nointerp", "c"))
    assert caught.value.definite
    assert caught.value.misconfigured
    assert (await b.status("run-nointerp")).state == "failed"
    assert "cannot start the pipeline" in b.log_path("run-nointerp").read_text()


async def test_executable_removed_after_configuration_is_refused(tmp_path: Path) -> None:
    """A deleted executable makes ping fail and start refuse before any run folder exists."""
    path = script(tmp_path, "true\n")
    b = backend(path, tmp_path)
    await b.ping()
    path.unlink()
    with pytest.raises(BackendRefused):
        await b.ping()
    with pytest.raises(BackendRefused) as caught:
        await b.start(StartRequest("run-gone", "c"))
    assert caught.value.misconfigured
    assert await b.find("run-gone") is None

"""The noop:// backend: accepts every start, runs nothing, keeps nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from triggergate.backends.base import Started, StartRequest, Status
from triggergate.backends.noop import NoopBackend
from triggergate.errors import ConfigurationError
from triggergate.registry import Context, backend_from_url


def is_empty(folder: Path) -> bool:
    return not any(folder.iterdir())


def test_url_selects_noop_with_default_and_custom_name(tmp_path: Path) -> None:
    """``noop://`` builds a NoopBackend named "noop"; ``?name=`` renames it."""
    plain = backend_from_url("noop://", Context(state_dir=tmp_path))
    named = backend_from_url("noop://?name=dry-run", Context(state_dir=tmp_path))
    assert isinstance(plain, NoopBackend)
    assert plain.name == "noop"
    assert named.name == "dry-run"


@pytest.mark.parametrize(
    "url",
    [
        "noop://host",
        "noop:///some/path",
        "noop://?colour=blue",
        "noop://?name=",
        "noop://?name=a&name=b",
        "noop://#frag",
    ],
)
def test_bad_url_raises_configuration_error_naming_key_and_value(url: str) -> None:
    """Anything but ``noop://`` with an optional single non-empty name is a ConfigurationError."""
    with pytest.raises(ConfigurationError) as caught:
        backend_from_url(url, Context())
    assert caught.value.key == "pipeline"
    assert caught.value.value == url
    assert "pipeline" in str(caught.value)
    assert url in str(caught.value)


async def test_start_succeeds_at_once_and_keeps_nothing(tmp_path: Path) -> None:
    """Each start returns its request id as a succeeded run and writes nothing anywhere."""
    backend = NoopBackend.from_url("noop://", Context(state_dir=tmp_path))
    results = [await backend.start(StartRequest(f"r{i}", "c", {"p": "v"})) for i in range(50)]
    assert results == [Started(ref=f"r{i}", state="succeeded") for i in range(50)]
    assert is_empty(tmp_path)


async def test_status_is_succeeded_for_any_ref() -> None:
    """Status is succeeded for refs it returned and for ones it never saw: it keeps nothing."""
    backend = NoopBackend()
    started = await backend.start(StartRequest("abc", "c"))
    assert await backend.status(started.ref) == Status("succeeded")
    assert await backend.status("never-started") == Status("succeeded")


async def test_find_counts_any_uncertain_start_as_started() -> None:
    """Reconciliation finds every request id as a succeeded run, so its slot stays charged."""
    backend = NoopBackend()
    assert await backend.find("anything") == Started(ref="anything", state="succeeded")

"""The ``triggergate`` command: every subcommand, including check-config on broken files."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from starlette.testclient import TestClient

from triggergate.cli import main
from triggergate.settings import Settings
from triggergate.web.app import create_app


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean TRIGGERGATE_* environment pointing at a SQLite file in tmp_path."""
    for name in list(__import__("os").environ):
        if name.startswith("TRIGGERGATE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("TRIGGERGATE_STORE", f"sqlite:///{tmp_path}/gate.db")
    monkeypatch.setenv("TRIGGERGATE_STATE_DIR", str(tmp_path / "state"))
    return tmp_path


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def press(tmp_path: Path, peer: str, times: int) -> list[int]:
    settings = Settings(store=f"sqlite:///{tmp_path}/gate.db", state_dir=tmp_path / "state", coalesce=False)
    with TestClient(create_app(settings), client=(peer, 1)) as client:
        return [client.post("/trigger").status_code for _ in range(times)]


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "triggergate.toml"
    path.write_text(text)
    return str(path)


def test_check_config_accepts_a_good_file(env: Path) -> None:
    """A valid file exits 0 and summarises what it configures."""
    result = run("check-config", write(env, 'limits = ["3/7d", "1/10m"]\nbudget = ["100/1d"]\n'))
    assert result.exit_code == 0, result.output
    assert "limits=3/7d,1/10m" in result.output and "budget=100/1d" in result.output


def test_check_config_says_what_the_gitlab_correlation_choice_costs(env: Path) -> None:
    """check-config prints, per choice of the GitLab correlation variable, what it costs."""
    on = run("check-config", write(env, 'pipeline = "gitlab://gitlab.com/acme/site"\n'))
    off = run(
        "check-config",
        write(env, 'pipeline = "gitlab://gitlab.com/acme/site?correlation_variable="\n'),
    )
    assert on.exit_code == off.exit_code == 0, on.output + off.output
    assert "note: gitlab:" in on.output and "must allow pipeline variables" in on.output
    assert "note: gitlab:" in off.output and "counts as not started" in off.output


def test_check_config_refuses_more_workflow_inputs_than_github_takes(env: Path) -> None:
    """25 allow-listed parameters + the correlation input exceed GitHub's 25 inputs: exit 2
    naming params and the limit."""
    params = "".join(f'[params.p{i}]\ndefault = "x"\n' for i in range(25))
    result = run("check-config", write(env, f'pipeline = "github://acme/site/deploy.yml"\n{params}'))
    assert result.exit_code == 2
    assert "params" in result.output and "at most 25" in result.output


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('limits = ["3/7x"]', ["limits", "'3/7x'", "units s, m, h, d, w"]),
        ('trusted_proxies = ["10.0.0.300/8"]', ["trusted_proxies", "10.0.0.300/8", "CIDR"]),
        ("ipv6_prefix = 200", ["ipv6_prefix", "200", "less than or equal to 128"]),
        ('colour = "blue"', ["colour", "unknown key"]),
        ('admin_token = "hunter2"', ["admin_token", "TRIGGERGATE_ADMIN_TOKEN"]),
        ('store = "mongo://db"', ["store", "mongo://", "known schemes", "sqlite://"]),
        ('pipeline = "command://relative/script"', ["pipeline", "command://relative/script"]),
        ("limits = [", ["not valid TOML"]),
    ],
)
def test_check_config_names_key_value_and_what_is_allowed(
    env: Path, text: str, expected: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each kind of mistake exits 2 with the key, the value and what is allowed."""
    monkeypatch.delenv("TRIGGERGATE_STORE")
    result = run("check-config", write(env, text + "\n"))
    assert result.exit_code == 2
    for fragment in expected:
        assert fragment in result.output
    assert "hunter2" not in result.output


def test_check_config_reports_every_problem_at_once(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two independent mistakes are both reported."""
    monkeypatch.delenv("TRIGGERGATE_STORE")
    result = run("check-config", write(env, 'limits = ["x"]\nstore = "mongo://db"\n'))
    assert result.exit_code == 2
    assert "limits" in result.output and "mongo://" in result.output


def test_environment_overrides_the_file(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """TRIGGERGATE_LIMITS wins over the file's limits."""
    monkeypatch.setenv("TRIGGERGATE_LIMITS", "5/1d,1/1m")
    result = run("check-config", write(env, 'limits = ["3/7d"]\n'))
    assert "limits=5/1d,1/1m" in result.output


def test_missing_config_file_is_exit_2(env: Path) -> None:
    """A config path that does not exist is named."""
    result = run("check-config", str(env / "nope.toml"))
    assert result.exit_code == 2 and "not found" in result.output


def test_quota_show_and_reset(env: Path) -> None:
    """show reports used and remaining; reset gives the slots back and is audited."""
    assert press(env, "198.51.100.4", 4) == [202, 202, 202, 429]
    shown = run("quota", "show", "198.51.100.4")
    assert '"used": 3' in shown.output and '"remaining": 0' in shown.output
    reset = run("quota", "reset", "198.51.100.4")
    assert reset.exit_code == 0 and "3 slot(s)" in reset.output
    assert press(env, "198.51.100.4", 1) == [202]
    audit = run("audit", "list", "--outcome", "admin", "--json")
    assert "quota_reset" in audit.output


def test_audit_list_filters_by_outcome_and_client(env: Path) -> None:
    """audit list shows accepted triggers per client, as a table or JSON lines."""
    press(env, "198.51.100.5", 2)
    press(env, "198.51.100.6", 1)
    table = run("audit", "list", "--outcome", "accepted")
    assert table.exit_code == 0 and table.output.count("accepted") == 3
    only = run("audit", "list", "--client", "198.51.100.6", "--json")
    assert only.output.count("\n") == 1 and "198.51.100.6" in only.output
    recent = run("audit", "list", "--since", "1h", "--json", "--limit", "2")
    assert recent.output.count("\n") == 2
    bad = run("audit", "list", "--since", "yesterday-ish")
    assert bad.exit_code == 2


def test_kill_switch_pauses_and_resumes_every_trigger(env: Path) -> None:
    """on -> 503 paused with the operator's reason; off -> triggers flow again."""
    assert run("kill-switch", "on", "--reason", "maintenance until 14:00").exit_code == 0
    settings = Settings(store=f"sqlite:///{env}/gate.db", state_dir=env / "state", coalesce=False)
    with TestClient(create_app(settings), client=("198.51.100.7", 1)) as client:
        paused = client.post("/trigger")
        assert paused.status_code == 503
        assert paused.json()["detail"] == "maintenance until 14:00"
        assert paused.headers["retry-after"] == "600"
    assert run("kill-switch", "off").exit_code == 0
    assert press(env, "198.51.100.7", 1) == [202]


def test_dlq_list_and_retry(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Dead letters are listed and can be queued again."""
    import asyncio

    from triggergate.registry import Context, store_from_url
    from triggergate.stores.base import OutboxItem

    async def bury() -> None:
        store = store_from_url(f"sqlite:///{env}/gate.db", Context())
        await store.open()
        await store.bury(
            OutboxItem("dead1", "log://", {"subject": "Pipeline trigger failed"}, 5, 0, "timeout")
        )
        await store.close()

    asyncio.run(bury())
    listed = run("dlq", "list")
    assert "dead1" in listed.output and "Pipeline trigger failed" in listed.output
    assert "1 notification(s)" in run("dlq", "retry").output
    assert "no dead letters" in run("dlq", "list").output


def test_migrate_creates_the_schema(env: Path) -> None:
    """migrate on a fresh store succeeds."""
    result = run("migrate")
    assert result.exit_code == 0 and "schema up to date" in result.output
    assert (env / "gate.db").exists()


def test_serve_refuses_an_unusable_store_with_exit_2(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """serve fails at start, naming the store, when it cannot be opened."""
    monkeypatch.setenv("TRIGGERGATE_STORE", "sqlite:////proc/no/such/dir/gate.db")
    result = CliRunner().invoke(main, ["serve", "--port", "0"])
    assert result.exit_code == 2
    assert "store unavailable" in result.output


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("redis://:s3cret-pass@127.0.0.1:9/0", marks=pytest.mark.redis),
        pytest.param("postgresql://gate:s3cret-pass@127.0.0.1:9/gate", marks=pytest.mark.postgres),
    ],
)
def test_serve_names_an_unreachable_shared_store_and_masks_its_password(
    env: Path, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    """A refused connection at start exits 2, names the store and the cause, never the password."""
    monkeypatch.setenv("TRIGGERGATE_STORE", url)
    result = CliRunner().invoke(main, ["serve", "--port", "0"])
    assert result.exit_code == 2
    assert "store unavailable" in result.output and "127.0.0.1:9" in result.output
    assert "s3cret-pass" not in result.output

"""The ``triggergate`` command: every subcommand, including check-config on broken files."""

from __future__ import annotations

import traceback
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from starlette.testclient import TestClient

from triggergate.cli import main
from triggergate.errors import ConfigurationError
from triggergate.settings import Settings, load_settings
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


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("hunter2-hunter2-hunter2", id="short"),
        pytest.param("passwordpasswordpasswordpassword", id="repetitive"),
        pytest.param("01" * 40, id="two-characters"),
    ],
)
@pytest.mark.parametrize("command", ["check-config", "serve"])
def test_a_weak_admin_token_exits_2_naming_the_key_and_the_generator(
    env: Path, monkeypatch: pytest.MonkeyPatch, token: str, command: str
) -> None:
    """check-config and serve refuse a weak token before anything starts: exit 2, the key,
    how to generate a good one, and never the token."""
    monkeypatch.setenv("TRIGGERGATE_ADMIN_TOKEN", token)
    result = run(command)
    assert result.exit_code == 2
    assert "admin_token (TRIGGERGATE_ADMIN_TOKEN)" in result.output
    assert 'python -c "import secrets; print(secrets.token_urlsafe(32))"' in result.output
    assert token not in result.output


def test_a_weak_admin_token_in_a_file_is_refused_the_same_way(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TRIGGERGATE_ADMIN_TOKEN_FILE goes through the same rule."""
    secret = env / "admin-token"
    secret.write_text("short\n")
    monkeypatch.setenv("TRIGGERGATE_ADMIN_TOKEN_FILE", str(secret))
    result = run("check-config")
    assert result.exit_code == 2 and "at least 32 are required" in result.output


def test_a_strong_admin_token_and_the_operator_settings_are_accepted(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A generated token passes; the sign-in limits and metrics networks come from the
    environment as comma-separated lists, like every list setting."""
    monkeypatch.setenv("TRIGGERGATE_ADMIN_TOKEN", "Qm3vT8yKc1pZr6WnX0aLd4sEh7uJf2gBiN5oV9tRwYe")
    monkeypatch.setenv("TRIGGERGATE_ADMIN_LOGIN_LIMITS", "5/10m, 20/1d")
    monkeypatch.setenv("TRIGGERGATE_ADMIN_LOGIN_BUDGET", "50/1h")
    monkeypatch.setenv("TRIGGERGATE_METRICS_ALLOW", "10.1.0.0/16,::1/128")
    assert run("check-config").exit_code == 0
    settings = load_settings()
    assert settings.admin_login_limits == ["5/10m", "20/1d"]
    assert settings.admin_login_budget == ["50/1h"]
    assert settings.metrics_allow == ["10.1.0.0/16", "::1/128"]


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("TRIGGERGATE_ADMIN_LOGIN_LIMITS", "", "at least one limit is required"),
        ("TRIGGERGATE_ADMIN_LOGIN_BUDGET", "10/1x", "units s, m, h, d, w"),
        ("TRIGGERGATE_METRICS_ALLOW", "10.0.0.300/8", "CIDR"),
    ],
)
def test_bad_operator_settings_exit_2_naming_the_key(
    env: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    """An empty sign-in limit, a bad limit or a bad network is named, with what is allowed."""
    monkeypatch.setenv(name, value)
    result = run("check-config")
    assert result.exit_code == 2 and name in result.output and expected in result.output


def test_the_readme_configuration_reference_lists_every_setting() -> None:
    """Each setting appears in the README's configuration table, by key or by variable."""
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("| key | default | environment | meaning |") :]
    table = table[: table.index("\n\n")]
    missing = [
        name
        for name in Settings.model_fields
        if f"`{name}`" not in table and f"`TRIGGERGATE_{name.upper()}`" not in table
    ]
    assert missing == []


def test_a_weak_token_never_appears_in_the_error_or_its_traceback(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where no CLI catches it (a Lambda cold start prints the traceback), the whole chain
    of the configuration error still names the key without the token's value."""
    token = "weak-but-memorable-token-value"
    monkeypatch.setenv("TRIGGERGATE_ADMIN_TOKEN", token)
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    text = "".join(traceback.format_exception(caught.value))
    assert "admin_token (TRIGGERGATE_ADMIN_TOKEN)" in text and token not in text

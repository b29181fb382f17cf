"""``smtp://`` / ``smtps://`` against a real aiosmtpd server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest

from tests.servers.smtp import SMTPServer, TLSFiles, smtp_server, tls_files
from triggergate.errors import ConfigurationError, NotifyError
from triggergate.notifiers.base import Alert
from triggergate.notifiers.smtp import SMTPNotifier
from triggergate.registry import Context, notifier_from_url

PASSWORD = "s3cret-Pa55"
ALERT = Alert(
    event="accepted",
    subject="Pipeline demo triggered",
    body="Run r-1 started for client 203.0.113.7.",
    attributes={"run_id": "r-1", "client": "203.0.113.7"},
)


def url(server: SMTPServer, scheme: str = "smtp", **options: str) -> str:
    query = {"to": "ops@example.com,oncall@example.com", "from": "gate@example.com", **options}
    return f"{scheme}://{server.host}:{server.port}?{urlencode(query)}"


def ctx(password: str | None = None) -> Context:
    return Context(environ={"TRIGGERGATE_SMTP_PASSWORD": password} if password else {})


@pytest.fixture
def tls(tmp_path: Path) -> TLSFiles:
    return tls_files(tmp_path)


@pytest.fixture
def plain() -> Iterator[SMTPServer]:
    with smtp_server() as server:
        yield server


async def test_alert_is_mailed_to_every_recipient_with_subject_and_body(plain: SMTPServer) -> None:
    """One e-mail reaches the configured envelope recipients with the alert's text."""
    await notifier_from_url(url(plain), ctx()).send(ALERT)
    assert len(plain.messages) == 1
    got = plain.messages[0]
    assert got.mail_from == "gate@example.com"
    assert got.rcpt_tos == ["ops@example.com", "oncall@example.com"]
    msg = got.message
    assert msg["Subject"] == ALERT.subject
    assert msg["X-Triggergate-Event"] == "accepted"
    text = msg.get_content()
    assert ALERT.body in text
    assert "run_id: r-1" in text


async def test_crlf_in_subject_or_attributes_never_creates_headers(plain: SMTPServer) -> None:
    """CR/LF smuggled into subject, event or attributes yields no new header or recipient."""
    evil = Alert(
        event="accepted\r\nX-Evil: 1",
        subject="Run ok\r\nBcc: victim@evil.example\r\n\r\nforged body",
        body="body",
        attributes={"client": "1.2.3.4\r\nX-Injected: yes", "x\nTo": "victim@evil.example"},
    )
    await notifier_from_url(url(plain), ctx()).send(evil)
    got = plain.messages[0]
    assert got.rcpt_tos == ["ops@example.com", "oncall@example.com"]
    msg = got.message
    names = [name.lower() for name in msg]
    assert "bcc" not in names
    assert "x-evil" not in names
    assert "x-injected" not in names
    assert names.count("subject") == 1
    assert names.count("to") == 1
    assert msg["To"] == "ops@example.com, oncall@example.com"
    assert msg["Subject"] == "Run ok Bcc: victim@evil.example forged body"
    head = got.raw.split(b"\r\n\r\n", 1)[0]
    assert b"\nBcc:" not in head
    assert b"\nX-Injected" not in head


@pytest.mark.parametrize("mechanism", ["LOGIN", "PLAIN"])
async def test_starttls_login_delivers_over_verified_tls(tls: TLSFiles, mechanism: str) -> None:
    """STARTTLS against a CA-signed cert, then AUTH LOGIN or PLAIN with the env password."""
    other = "PLAIN" if mechanism == "LOGIN" else "LOGIN"
    with smtp_server(tls=tls, users={"gate": PASSWORD}, exclude=[other]) as server:
        options = {"starttls": "true", "user": "gate", "cafile": str(tls.ca)}
        notifier = notifier_from_url(url(server, **options), ctx(PASSWORD))
        await notifier.send(ALERT)
    assert server.auth_attempts == [(mechanism, True)]
    assert len(server.messages) == 1
    assert server.messages[0].tls is True
    assert server.messages[0].authenticated_as == "gate"
    assert PASSWORD not in notifier.target


async def test_wrong_password_is_a_safe_notify_error(tls: TLSFiles) -> None:
    """A refused login raises NotifyError naming the SMTP code, never the password or user."""
    with smtp_server(tls=tls, users={"gate": PASSWORD}) as server:
        options = {"starttls": "true", "user": "gate", "cafile": str(tls.ca)}
        notifier = notifier_from_url(url(server, **options), ctx("wrong-password"))
        with pytest.raises(NotifyError) as caught:
            await notifier.send(ALERT)
    assert "SMTPAuthenticationError 535" in str(caught.value)
    assert "wrong-password" not in str(caught.value)
    assert "gate" not in str(caught.value)
    assert server.messages == []


async def test_untrusted_certificate_is_refused(tls: TLSFiles) -> None:
    """Without the CA the server's certificate fails verification: nothing is sent."""
    with smtp_server(tls=tls, users={"gate": PASSWORD}) as server:
        notifier = notifier_from_url(url(server, starttls="true", user="gate"), ctx(PASSWORD))
        with pytest.raises(NotifyError, match="SSLCertVerificationError"):
            await notifier.send(ALERT)
    assert server.auth_attempts == []
    assert server.messages == []


async def test_server_requiring_starttls_refuses_a_plain_client(tls: TLSFiles) -> None:
    """A client configured without STARTTLS gets a NotifyError, proving the TLS test is real."""
    with smtp_server(tls=tls) as server, pytest.raises(NotifyError, match="530"):
        await notifier_from_url(url(server), ctx()).send(ALERT)
    assert server.messages == []


async def test_smtps_speaks_tls_from_the_first_byte(tls: TLSFiles) -> None:
    """``smtps://`` connects with implicit TLS and logs in."""
    with smtp_server(tls=tls, implicit_tls=True, users={"gate": PASSWORD}) as server:
        target = url(server, "smtps", user="gate", cafile=str(tls.ca))
        await notifier_from_url(target, ctx(PASSWORD)).send(ALERT)
    assert len(server.messages) == 1
    assert server.messages[0].tls is True


async def test_password_comes_from_a_secret_file(tls: TLSFiles, tmp_path: Path) -> None:
    """TRIGGERGATE_SMTP_PASSWORD_FILE supplies the password when the variable is unset."""
    secret = tmp_path / "smtp-password"
    secret.write_text(PASSWORD + "\n")
    with smtp_server(tls=tls, implicit_tls=True, users={"gate": PASSWORD}) as server:
        target = url(server, "smtps", user="gate", cafile=str(tls.ca))
        environ = {"TRIGGERGATE_SMTP_PASSWORD_FILE": str(secret)}
        await notifier_from_url(target, Context(environ=environ)).send(ALERT)
    assert server.auth_attempts == [("PLAIN", True)]


async def test_unreachable_server_is_a_notify_error() -> None:
    """A refused connection raises NotifyError (the outbox retries it)."""
    with smtp_server() as server:
        dead = url(server)
    with pytest.raises(NotifyError, match="ConnectionRefusedError"):
        await notifier_from_url(dead, ctx()).send(ALERT)


@pytest.mark.parametrize(
    ("bad_url", "needle"),
    [
        ("smtp://gate:hunter2@mail.example.com?to=a@x.io&from=g@x.io", "password"),
        ("smtp://mail.example.com?from=g@x.io", "to="),
        ("smtp://mail.example.com?to=a@x.io", "from="),
        ("smtp://mail.example.com?to=a@x.io&from=g@x.io&user=gate", "TRIGGERGATE_SMTP_PASSWORD"),
        ("smtp://mail.example.com?to=a@x.io&from=g@x.io&colour=red", "unknown options"),
        ("smtp://mail.example.com?to=a%0D%0ABcc:z@x.io&from=g@x.io", "invalid address"),
    ],
)
def test_bad_smtp_urls_are_configuration_errors(bad_url: str, needle: str) -> None:
    """Each broken URL is refused with a message naming the problem, never the password."""
    with pytest.raises(ConfigurationError, match=needle) as caught:
        SMTPNotifier.from_url(bad_url, ctx())
    assert "hunter2" not in str(caught.value)
    assert "hunter2" not in str(caught.value.value)


def test_login_without_tls_is_refused() -> None:
    """A user on plain ``smtp://`` without starttls is refused: the password would go in clear."""
    bad = "smtp://mail.example.com?to=a@x.io&from=g@x.io&user=gate"
    with pytest.raises(ConfigurationError, match="without TLS"):
        SMTPNotifier.from_url(bad, ctx(PASSWORD))

"""A real SMTP server (aiosmtpd) on 127.0.0.1, in a thread, with optional TLS and AUTH.

``tls_files`` makes a throwaway CA and a server certificate for 127.0.0.1 with
the ``cryptography`` package, so the client verifies the chain honestly.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass
class Delivered:
    """One message as the server accepted it."""

    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    authenticated_as: str | None
    tls: bool

    @property
    def message(self) -> EmailMessage:
        return message_from_bytes(self.raw, policy=SMTP_POLICY)


@dataclass
class SMTPServer:
    """Control panel of a running server."""

    host: str
    port: int
    messages: list[Delivered] = field(default_factory=list)
    auth_attempts: list[tuple[str, bool]] = field(default_factory=list)


class _Recorder:
    def __init__(self, state: SMTPServer) -> None:
        self.state = state

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.state.messages.append(
            Delivered(
                mail_from=envelope.mail_from,
                rcpt_tos=list(envelope.rcpt_tos),
                raw=envelope.original_content,
                authenticated_as=session.auth_data if session.authenticated else None,
                tls=_on_tls(server, session),
            )
        )
        return "250 OK"


def _on_tls(server: Any, session: Any) -> bool:
    # session.ssl is set by STARTTLS; an SMTPS transport carries its own context.
    return session.ssl is not None or server.transport.get_extra_info("sslcontext") is not None


class _SMTPSController(Controller):
    """aiosmtpd only counts TLS begun by STARTTLS, so over SMTPS it would never offer AUTH.

    Every byte here is already encrypted, so its gate is lifted per connection, and
    the authenticator itself still refuses any login that is not on TLS.
    """

    def factory(self) -> Any:
        smtp = super().factory()  # type: ignore[no-untyped-call]
        smtp._auth_require_tls = False
        return smtp


@dataclass(frozen=True)
class TLSFiles:
    ca: Path
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert, self.key)
        return ctx


def tls_files(folder: Path) -> TLSFiles:
    """A fresh CA and a certificate for 127.0.0.1/localhost signed by it."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "triggergate test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False)
        .add_extension(x509.ExtendedKeyUsage([x509.OID_SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files = TLSFiles(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def smtp_server(
    *,
    tls: TLSFiles | None = None,
    implicit_tls: bool = False,
    users: dict[str, str] | None = None,
    exclude: list[str] | None = None,
) -> Iterator[SMTPServer]:
    """Serve SMTP on a free 127.0.0.1 port until the block ends.

    With ``tls`` and not ``implicit_tls``: STARTTLS offered and required.
    With ``implicit_tls``: TLS from the first byte (SMTPS). With ``users``:
    AUTH LOGIN/PLAIN required, and only over TLS (aiosmtpd's default);
    ``exclude`` drops mechanisms from the offer.
    """
    state = SMTPServer(host="127.0.0.1", port=_free_port())

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        ok = (
            _on_tls(server, session)
            and isinstance(data, LoginPassword)
            and users is not None
            and users.get(data.login.decode()) == data.password.decode()
        )
        state.auth_attempts.append((mechanism, ok))
        if not ok:
            return AuthResult(success=False, handled=False)  # aiosmtpd then answers 535
        return AuthResult(success=True, auth_data=data.login.decode())

    kwargs: dict[str, Any] = {}
    if tls is not None and implicit_tls:
        kwargs["ssl_context"] = tls.server_context()
    elif tls is not None:
        kwargs.update(tls_context=tls.server_context(), require_starttls=True)
    if users is not None:
        kwargs.update(authenticator=authenticator, auth_required=True, auth_exclude_mechanism=exclude or [])
    factory = _SMTPSController if implicit_tls else Controller
    controller = factory(_Recorder(state), hostname=state.host, port=state.port, **kwargs)
    controller.start()
    try:
        yield state
    finally:
        controller.stop()

"""``smtp://`` and ``smtps://``: the reference design's e-mail alert.

``smtp://host:587?to=a@x,b@y&from=gate@x&starttls=true&user=NAME`` upgrades
with STARTTLS; ``smtps://host:465?...`` speaks TLS from the first byte. The
password comes only from ``TRIGGERGATE_SMTP_PASSWORD`` (or ``..._FILE``), never
the URL. Optional: ``cafile=/path/ca.pem`` to trust a private CA,
``timeout=SECONDS`` (default 10). Login is refused over a connection without
TLS, so a password never crosses the wire in clear.

smtplib blocks, so each delivery runs in a worker thread with a socket timeout.
"""

from __future__ import annotations

import asyncio
import re
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from urllib.parse import parse_qs, urlsplit

from triggergate.errors import ConfigurationError, NotifyError
from triggergate.notifiers.base import Alert, Notifier
from triggergate.registry import Context

_DEFAULT_PORTS = {"smtp": 25, "smtps": 465}
_OPTIONS = {"to", "from", "starttls", "user", "cafile", "timeout"}
_ADDRESS = re.compile(r"^[^\s@<>,;\"]+@[^\s@<>,;\"]+$")
# Every character str.splitlines() breaks on, plus the other C0 controls: none may reach a header.
_CONTROLS = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]+")


def header_text(value: str, limit: int = 200) -> str:
    """One safe header line: control characters (CR, LF and kin) become one space."""
    return _CONTROLS.sub(" ", value).strip()[:limit]


@dataclass(frozen=True)
class SMTPConfig:
    """Where and how to deliver; ``password`` never appears in ``target``."""

    host: str
    port: int
    sender: str
    recipients: tuple[str, ...]
    implicit_tls: bool = False
    starttls: bool = False
    user: str = ""
    password: str = ""
    cafile: str = ""
    timeout: float = 10.0


class SMTPNotifier(Notifier):
    """Sends each alert as one plain-text e-mail to the configured recipients."""

    def __init__(self, config: SMTPConfig, target: str) -> None:
        self.config = config
        self.target = target
        try:
            self._tls = ssl.create_default_context(cafile=config.cafile or None)
        except OSError as exc:
            raise ConfigurationError(
                "notify: smtp cafile cannot be read", key="notify", value=target
            ) from exc

    @classmethod
    def from_url(cls, url: str, ctx: Context) -> SMTPNotifier:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        target = url if parts.password is None else url.replace(f":{parts.password}@", "@", 1)

        def bad(problem: str) -> ConfigurationError:
            return ConfigurationError(f"notify: smtp URL {problem}", key="notify", value=target)

        if parts.password is not None:
            raise bad("must not hold a password; set TRIGGERGATE_SMTP_PASSWORD instead")
        if not parts.hostname:
            raise bad("needs a host, e.g. smtp://mail.example.com:587?to=ops@example.com")
        query = parse_qs(parts.query, keep_blank_values=True)
        unknown = sorted(set(query) - _OPTIONS)
        if unknown:
            raise bad(f"has unknown options {unknown}; allowed: {sorted(_OPTIONS)}")
        opt = {k: v[-1] for k, v in query.items()}
        recipients = tuple(a.strip() for a in opt.get("to", "").split(",") if a.strip())
        sender = opt.get("from", "").strip()
        if not recipients:
            raise bad("needs to=address[,address...]")
        if not sender:
            raise bad("needs from=address")
        for address in (*recipients, sender):
            if not _ADDRESS.match(address):
                raise bad(f"has an invalid address {address!r}")
        starttls = opt.get("starttls", "false").lower()
        if starttls not in ("true", "false", "1", "0", "yes", "no"):
            raise bad("starttls must be true or false")
        try:
            port = parts.port or _DEFAULT_PORTS[scheme]
            timeout = float(opt.get("timeout", "10"))
        except (ValueError, KeyError) as exc:
            raise bad("has an invalid port, scheme or timeout") from exc
        if not 0 < timeout <= 120:
            raise bad("timeout must be between 0 and 120 seconds")
        user = opt.get("user", "") or (parts.username or "")
        config = SMTPConfig(
            host=parts.hostname,
            port=port,
            sender=sender,
            recipients=recipients,
            implicit_tls=scheme == "smtps",
            starttls=starttls in ("true", "1", "yes") and scheme == "smtp",
            user=user,
            password=(ctx.secret("SMTP_PASSWORD") or "") if user else "",
            cafile=opt.get("cafile", ""),
            timeout=timeout,
        )
        if user and not config.password:
            raise bad("names a user but TRIGGERGATE_SMTP_PASSWORD is not set")
        if user and not (config.implicit_tls or config.starttls):
            raise bad("logs in without TLS; use smtps:// or starttls=true")
        return cls(config, target)

    def message(self, alert: Alert) -> EmailMessage:
        """The e-mail for ``alert``; header values are single lines by construction."""
        msg = EmailMessage(policy=SMTP_POLICY)
        msg["Subject"] = header_text(alert.subject) or header_text(alert.event)
        msg["From"] = self.config.sender
        msg["To"] = ", ".join(self.config.recipients)
        msg["X-Triggergate-Event"] = header_text(alert.event, 64)
        details = "".join(f"{k}: {v}\n" for k, v in sorted(alert.attributes.items()))
        msg.set_content(f"{alert.body}\n\n{details}" if details else f"{alert.body}\n")
        return msg

    async def send(self, alert: Alert) -> None:
        msg = self.message(alert)
        await asyncio.to_thread(self._deliver, msg)

    def _deliver(self, msg: EmailMessage) -> None:
        cfg = self.config
        tls = self._tls
        try:
            client: smtplib.SMTP
            if cfg.implicit_tls:
                client = smtplib.SMTP_SSL(cfg.host, cfg.port, timeout=cfg.timeout, context=tls)
            else:
                client = smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout)
            with client:
                if cfg.starttls:
                    client.starttls(context=tls)
                if cfg.user:
                    client.login(cfg.user, cfg.password)
                # Envelope recipients come from the config only, never from the message.
                client.send_message(msg, from_addr=cfg.sender, to_addrs=list(cfg.recipients))
        except smtplib.SMTPResponseException as exc:
            raise NotifyError(f"{self.safe_target}: {type(exc).__name__} {exc.smtp_code}") from exc
        except (smtplib.SMTPException, OSError, ValueError) as exc:
            raise NotifyError(f"{self.safe_target}: {type(exc).__name__}") from exc

    @property
    def safe_target(self) -> str:
        """``smtp://host:port`` for error messages: no recipients, user or paths."""
        scheme = "smtps" if self.config.implicit_tls else "smtp"
        return f"{scheme}://{self.config.host}:{self.config.port}"

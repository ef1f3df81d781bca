"""Sending e-mail: the one place dsr sends mail from (today: Art. 19 notices, ``dsr.domain.notices``).

With ``DSR_SMTP_URL`` set, each mail goes to that SMTP server. ``smtp://user:password@host:port``
(port 587 by default) upgrades the connection with STARTTLS before anything else is said, and a server
that does not offer STARTTLS gets nothing: neither the credentials nor a notice cross a network in
clear. ``smtps://user:password@host:port`` (port 465 by default) speaks TLS from the start. The
server's certificate is checked against the system's certificate authorities (``SSL_CERT_FILE``
names another bundle). User and password come from the URL, percent-encoded where needed; the
password appears in no message, log line or ``repr``.

Without ``DSR_SMTP_URL`` each mail is written as an ``.eml`` file to ``instance/mail/`` (development
and the demo). Production refuses that: a notice written to a file was not sent.

A mail's Message-ID comes from its ``key``, so a mail sent again (a retry after the server's answer
was lost) carries the same Message-ID and the recipient can tell it is the same one; its file, in
development, is overwritten.
"""

from __future__ import annotations

import logging
import os
import re
import smtplib
import ssl
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, parseaddr
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from dsr.config import Settings

log = logging.getLogger(__name__)

SMTP_PORT = 587  # submission, with STARTTLS
SMTPS_PORT = 465  # submission over TLS from the start
TIMEOUT = 30.0
EXAMPLE = "smtp://user:password@host:587 (STARTTLS) or smtps://user:password@host:465 (TLS from the start)"


class MailError(Exception):
    """A mail was not sent. ``permanent``: the server refused it for good (5xx) or cannot be used
    safely; sending again unchanged will not help, a person must look."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


def check_address(raw: str) -> str:
    """``raw`` if it is one e-mail address (``dpo@example.com`` or ``DPO office <dpo@example.com>``),
    else ValueError saying what is expected."""
    _name, address = parseaddr(raw)
    local, at, domain = address.rpartition("@")
    if not (local and at and domain) or any(c.isspace() for c in address) or "\r" in raw or "\n" in raw:
        raise ValueError("must be one e-mail address such as dsr@example.com or 'DPO office <dpo@example.com>', "
                         f"got {raw!r}")
    return raw.strip()


def _masked(url: str) -> str:
    """``url`` with its password replaced by ``***``, for messages."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return repr(url)
    except ValueError:
        return "an unreadable URL"
    return repr(parts._replace(netloc=f"{parts.username}:***@{parts.netloc.rpartition('@')[2]}").geturl())


@dataclass(frozen=True)
class SmtpServer:
    host: str
    port: int
    implicit_tls: bool  # smtps://: TLS from the start; smtp://: STARTTLS, required
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, url: str) -> SmtpServer:
        """The server ``url`` names; ValueError (its password masked) when it is not one."""
        shown = _masked(url)
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise ValueError(f"must be {EXAMPLE} with a port number from 1 to 65535, got {shown}") from None
        if parts.scheme not in ("smtp", "smtps"):
            raise ValueError(f"must be {EXAMPLE}, got {shown}")
        if not parts.hostname:
            raise ValueError(f"names no host; it must be {EXAMPLE}, got {shown}")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(f"must have no path, query or fragment; it must be {EXAMPLE}, got {shown}")
        if port == 0:
            raise ValueError(f"must name a port from 1 to 65535, got {shown}")
        if parts.password is not None and not parts.username:
            raise ValueError(f"gives a password without a user, got {shown}")
        implicit = parts.scheme == "smtps"
        return cls(parts.hostname, port or (SMTPS_PORT if implicit else SMTP_PORT), implicit,
                   unquote(parts.username) if parts.username else None,
                   unquote(parts.password) if parts.password is not None else None)

    def __str__(self) -> str:
        return f"{'smtps' if self.implicit_tls else 'smtp'}://{self.host}:{self.port}"  # never the credentials


@dataclass(frozen=True)
class Mail:
    to: str
    subject: str
    body: str  # plain text
    key: str  # the same for every attempt at this mail: its Message-ID and file name come from it
    reply_to: str | None = None


@dataclass(frozen=True)
class Sent:
    transport: str  # smtp | file
    answer: str  # smtp: the server's reply to the message; file: the .eml file's name
    message_id: str
    at: datetime


class Mailer:
    def __init__(self, sender: str, smtp: SmtpServer | None, folder: Path, *, files_allowed: bool = True,
                 timeout: float = TIMEOUT) -> None:
        self.sender = check_address(sender)
        self.smtp, self.folder, self.files_allowed, self.timeout = smtp, folder, files_allowed, timeout

    @classmethod
    def from_settings(cls, settings: Settings, default_sender: str | None = None) -> Mailer:
        """``DSR_SMTP_URL``'s server (else files in instance/mail, outside production), sending as
        ``DSR_MAIL_FROM``, else ``default_sender`` (the data map's DPO address)."""
        return cls(settings.mail_from or default_sender or "dsr@localhost",
                   SmtpServer.parse(settings.smtp_url) if settings.smtp_url else None,
                   settings.instance_dir / "mail", files_allowed=not settings.production)

    @property
    def transport(self) -> str:
        return "smtp" if self.smtp else "file"

    def message(self, mail: Mail) -> EmailMessage:
        domain = parseaddr(self.sender)[1].rpartition("@")[2] or "localhost"
        message = EmailMessage(policy=SMTP)
        message["From"] = self.sender
        message["To"] = mail.to
        if mail.reply_to:
            message["Reply-To"] = mail.reply_to
        message["Subject"] = mail.subject
        message["Date"] = format_datetime(datetime.now(UTC))
        message["Message-ID"] = f"<{_safe(mail.key)}@{domain}>"
        message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no out-of-office replies to a machine
        # Quoted-printable: 7-bit on the wire, so any server takes the German text (no 8BITMIME needed).
        message.set_content(mail.body, charset="utf-8", cte="quoted-printable")
        return message

    def send(self, mail: Mail) -> Sent:
        """Send ``mail``; MailError when it was not sent."""
        message = self.message(mail)
        message_id = str(message["Message-ID"])
        if self.smtp is not None:
            answer = self._smtp(self.smtp, message, parseaddr(mail.to)[1])
        elif self.files_allowed:
            answer = self._file(message, mail.key)
        else:
            raise MailError("DSR_SMTP_URL is not set: in production mail is sent by SMTP, never only written to "
                            "a file", permanent=True)
        log.info("mail %s to %s: %s %s", message_id, mail.to, self.transport, answer)
        return Sent(self.transport, answer, message_id, datetime.now(UTC))

    def _file(self, message: EmailMessage, key: str) -> str:
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.folder / f"{_safe(key)}.eml"
        partial = target.with_name(f".{target.name}.partial")
        # Owner-only: a notice names the subject by the identifiers the recipient holds.
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(message.as_bytes())
        partial.replace(target)
        return target.name

    def _smtp(self, server: SmtpServer, message: EmailMessage, to: str) -> str:
        context = ssl.create_default_context()
        envelope_from = parseaddr(self.sender)[1]
        try:
            client = (smtplib.SMTP_SSL(server.host, server.port, timeout=self.timeout, context=context)
                      if server.implicit_tls else smtplib.SMTP(server.host, server.port, timeout=self.timeout))
            with client:
                client.ehlo()
                if not server.implicit_tls:
                    if not client.has_extn("starttls"):
                        raise MailError(f"{server} does not offer STARTTLS, and dsr sends no mail in clear (smtps:// "
                                        "for a server that speaks TLS from the start)", permanent=True)
                    client.starttls(context=context)
                    client.ehlo()
                if server.username is not None:
                    client.login(server.username, server.password or "")
                _expect(client.mail(envelope_from), (250,), server, "sender")
                _expect(client.rcpt(to), (250, 251), server, f"recipient {to}")
                code, reply = client.data(message.as_bytes())
                _expect((code, reply), (250,), server, "message")
                return f"{code} {reply.decode('utf-8', 'replace')}"
        except MailError:
            raise
        except smtplib.SMTPResponseException as exc:  # a refusal: the login, or a command, with its code
            raise MailError(f"{server} refused: {exc.smtp_code} {_text(exc.smtp_error)}",
                            permanent=exc.smtp_code >= 500) from exc
        except (OSError, smtplib.SMTPException) as exc:  # unreachable, TLS failed, connection lost
            raise MailError(f"{server}: {exc.__class__.__name__}: {exc}") from exc


def _expect(result: tuple[int, bytes], codes: tuple[int, ...], server: SmtpServer, what: str) -> None:
    code, reply = result
    if code not in codes:
        raise MailError(f"{server} refused the {what}: {code} {_text(reply)}", permanent=code >= 500)


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


def _safe(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", key)[:150]

"""A real SMTP server for tests (aiosmtpd on 127.0.0.1, a free port): TLS with a certificate of a
test CA made here, login required, and every message it accepts kept for the test to read.

The client side trusts the test CA through ``SSL_CERT_FILE`` (``TlsFiles.trust``), the variable with
which OpenSSL is pointed at another bundle in production too.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any, cast

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

USER, PASSWORD = "dsr-notices", "s3cret/pass word"  # the password needs percent-encoding in a URL
QUEUED = "2.0.0 Ok: queued as N0T1CE"


@dataclass(frozen=True)
class TlsFiles:
    ca: Path  # the test CA's certificate (PEM)
    cert: Path  # the server's certificate for 127.0.0.1 and localhost, and its key
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context

    def trust(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("SSL_CERT_FILE", str(self.ca))


def make_tls(folder: Path) -> TlsFiles:
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dsr test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
          .not_valid_after(now + timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    tls = TlsFiles(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    tls.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    tls.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    tls.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return tls


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Inbox:
    """The aiosmtpd handler: keeps each accepted message with its envelope."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.logins: list[str] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        self.messages.append(cast(EmailMessage, message_from_bytes(envelope.original_content, policy=policy.default)))
        return f"250 {QUEUED}"

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        ok = (isinstance(auth_data, LoginPassword) and auth_data.login == USER.encode()
              and auth_data.password == PASSWORD.encode())
        if ok:
            self.logins.append(mechanism)
        return AuthResult(success=ok, handled=False)


class LoopbackSmtp:
    """aiosmtpd on 127.0.0.1: STARTTLS required before login (``smtp://``), or TLS from the start
    (``implicit=True``, ``smtps://``)."""

    def __init__(self, tls: TlsFiles, *, implicit: bool = False, starttls: bool = True,
                 port: int | None = None) -> None:
        self.inbox, self.port, self.implicit = Inbox(), port or free_port(), implicit
        options: dict[str, Any] = {"authenticator": self.inbox.authenticate, "auth_require_tls": True}
        if implicit:  # aiosmtpd does not see the TLS under it: login is allowed, it is inside TLS all the same
            options |= {"ssl_context": tls.server_context(), "auth_require_tls": False}
        elif starttls:
            options |= {"tls_context": tls.server_context(), "require_starttls": True}
        else:
            options["auth_require_tls"] = False
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port, **options)
        self.running = False

    def start(self) -> LoopbackSmtp:
        self.controller.start()
        self.running = True
        return self

    def stop(self) -> None:
        if self.running:
            self.controller.stop()
            self.running = False

    @property
    def url(self) -> str:
        return (f"{'smtps' if self.implicit else 'smtp'}://{USER}:{PASSWORD.replace('/', '%2F').replace(' ', '%20')}"
                f"@127.0.0.1:{self.port}")

    @property
    def messages(self) -> list[EmailMessage]:
        return self.inbox.messages

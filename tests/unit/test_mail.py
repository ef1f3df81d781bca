"""The mailer (``dsr.mail``) against a real SMTP server on loopback, and its settings."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from dsr.config import ConfigError, Settings
from dsr.mail import Mail, Mailer, MailError, SmtpServer
from tests.smtp import PASSWORD, QUEUED, USER, TlsFiles, free_port, make_tls
from tests.smtp import LoopbackSmtp as Loopback

MAIL = Mail(to="privacy@partner.example", subject="Notice (DSR-2026-000001)", body="Grüße aus Bonn\n",
            key="DSR-2026-000001-notice-partner", reply_to="dpo@example.com")


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def server(tls: TlsFiles, monkeypatch: pytest.MonkeyPatch) -> Iterator[Loopback]:
    tls.trust(monkeypatch)
    running = Loopback(tls).start()
    yield running
    running.stop()


def test_a_url_names_the_server_its_tls_and_credentials_and_never_shows_the_password():
    server = SmtpServer.parse("smtp://dsr%40example.com:p%2Fw%20d@mail.example.com")
    assert (server.host, server.port, server.implicit_tls) == ("mail.example.com", 587, False)
    assert (server.username, server.password) == ("dsr@example.com", "p/w d")
    assert "p/w d" not in repr(server) and "p%2Fw" not in str(server) and str(server) == "smtp://mail.example.com:587"
    tls = SmtpServer.parse("smtps://relay.example.com")
    assert (tls.port, tls.implicit_tls, tls.username, tls.password) == (465, True, None, None)


@pytest.mark.parametrize("url", ["http://user:topsecret@mail.example.com", "smtp://user:topsecret@:25",
                                 "smtp://user:topsecret@mail.example.com:99999", "smtp://user:topsecret@host/path",
                                 "smtp://:topsecret@mail.example.com", "smtp://user:topsecret@host?starttls=no"])
def test_a_bad_smtp_url_is_a_start_up_error_naming_the_variable_without_the_password(url):
    with pytest.raises(ConfigError, match="DSR_SMTP_URL") as error:
        Settings.from_env({"DSR_SMTP_URL": url})
    assert "topsecret" not in str(error.value) and "***" in str(error.value)


def test_the_sender_is_checked_and_the_smtp_url_kept_out_of_the_settings_repr():
    with pytest.raises(ConfigError, match="DSR_MAIL_FROM"):
        Settings.from_env({"DSR_MAIL_FROM": "not an address"})
    settings = Settings.from_env({"DSR_SMTP_URL": "smtps://u:topsecret@mail.example.com",
                                  "DSR_MAIL_FROM": "DPO office <dpo@example.com>"})
    assert settings.mail_from == "DPO office <dpo@example.com>" and settings.smtp_url
    assert "topsecret" not in repr(settings)


def test_a_mail_goes_through_starttls_and_login_and_the_servers_reply_is_the_answer(server, tmp_path):
    sent = Mailer("DPO office <dpo@example.com>", SmtpServer.parse(server.url), tmp_path).send(MAIL)
    assert (sent.transport, sent.answer) == ("smtp", f"250 {QUEUED}")
    assert server.inbox.logins and server.inbox.envelopes == [("dpo@example.com", ["privacy@partner.example"])]
    [message] = server.messages
    assert message["Message-ID"] == sent.message_id == "<DSR-2026-000001-notice-partner@example.com>"
    assert message["Subject"] == MAIL.subject and message["Reply-To"] == "dpo@example.com"
    # Quoted-printable on the wire, the German text intact.
    assert message.get_content().replace("\r\n", "\n") == MAIL.body
    assert not list(tmp_path.iterdir())  # nothing written to files


def test_implicit_tls_smtps(tls, monkeypatch, tmp_path):
    tls.trust(monkeypatch)
    server = Loopback(tls, implicit=True).start()
    try:
        sent = Mailer("dpo@example.com", SmtpServer.parse(server.url), tmp_path).send(MAIL)
    finally:
        server.stop()
    assert sent.answer == f"250 {QUEUED}" and len(server.messages) == 1


def test_a_server_without_starttls_gets_nothing(tls, monkeypatch, tmp_path):
    tls.trust(monkeypatch)
    server = Loopback(tls, starttls=False).start()
    try:
        with pytest.raises(MailError, match="does not offer STARTTLS") as error:
            Mailer("dpo@example.com", SmtpServer.parse(server.url), tmp_path).send(MAIL)
    finally:
        server.stop()
    assert error.value.permanent and not server.messages and not server.inbox.logins


def test_a_certificate_not_trusted_or_wrong_credentials_or_no_server_are_errors_without_the_password(tls, tmp_path,
                                                                                                     monkeypatch):
    server = Loopback(tls).start()
    try:
        with pytest.raises(MailError, match="CERTIFICATE_VERIFY_FAILED"):  # SSL_CERT_FILE not pointed at the CA
            Mailer("dpo@example.com", SmtpServer.parse(server.url), tmp_path).send(MAIL)
        tls.trust(monkeypatch)
        wrong = replace(SmtpServer.parse(server.url), password="wrong")
        with pytest.raises(MailError, match="refused: 535") as refused:
            Mailer("dpo@example.com", wrong, tmp_path).send(MAIL)
        assert refused.value.permanent
    finally:
        server.stop()
    with pytest.raises(MailError, match="ConnectionRefusedError") as unreachable:
        Mailer("dpo@example.com", SmtpServer.parse(f"smtp://{USER}:x@127.0.0.1:{free_port()}"), tmp_path).send(MAIL)
    assert not unreachable.value.permanent  # the job's retries try again
    for error in (refused.value, unreachable.value):
        assert PASSWORD not in str(error)


def test_without_a_server_each_mail_is_a_file_and_production_refuses_that(tmp_path: Path):
    folder = tmp_path / "mail"
    sent = Mailer("dpo@example.com", None, folder).send(MAIL)
    assert sent.transport == "file" and sent.answer == "DSR-2026-000001-notice-partner.eml"
    written = folder / sent.answer
    assert written.stat().st_mode & 0o077 == 0  # the owner's only
    assert b"Subject: Notice (DSR-2026-000001)" in written.read_bytes()
    Mailer("dpo@example.com", None, folder).send(MAIL)  # the same mail again: the same file
    assert [p.name for p in folder.iterdir()] == [sent.answer]
    production = Settings(env="production", instance_dir=tmp_path)
    with pytest.raises(MailError, match="DSR_SMTP_URL is not set") as error:
        Mailer.from_settings(production, "dpo@example.com").send(MAIL)
    assert error.value.permanent

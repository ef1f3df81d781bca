"""Art. 19 notices of an erasure end to end (N-01..N-03, AT-37): who is told, how, when, and the letter.

The map is the tests' default (no processor store) with recipients told by e-mail: the notices reach a
real SMTP server on loopback (``tests.smtp``: STARTTLS and login), or, without ``DSR_SMTP_URL``, are
written as .eml files. Each test erases in stores of its own (``own_stores``).
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pypdf import PdfReader
from sqlalchemy import select

from dsr.demo import portal
from dsr.domain import notices
from dsr.models import AuditEvent, Task, utcnow
from tests.helpers import MAX, dpo_auth, submit, tell_by_hand, work_off
from tests.smtp import PASSWORD, QUEUED, LoopbackSmtp, TlsFiles, make_tls

PARTNER = "privacy@partner.example"  # vonage (NL): English
HELPDESK = "datenschutz@helpdesk.example"  # support_tool (DE): German
AUDITOR = "audit@pruefer.example"  # receives invoices only, which an erasure keeps


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def smtp(tls: TlsFiles, monkeypatch: pytest.MonkeyPatch) -> Iterator[LoopbackSmtp]:
    tls.trust(monkeypatch)  # dsr checks the server's certificate against the test CA
    server = LoopbackSmtp(tls).start()
    yield server
    server.stop()


def _datamap(test_datamap: Path, tmp_path: Path, **notify: dict[str, Any]) -> Path:
    """The tests' map with the recipients' ``notify`` replaced, and an auditor that only receives invoices."""
    raw = yaml.safe_load(test_datamap.read_text(encoding="utf-8"))
    raw["recipients"]["auditor"] = {"name": "Prüfgesellschaft Beispiel", "role": "recipient", "country": "DE",
                                    "notify": {"via": "email", "email": AUDITOR}}
    raw["categories"]["invoices"]["recipients"] = [*raw["categories"]["invoices"]["recipients"], "auditor"]
    for rid, how in notify.items():
        raw["recipients"][rid]["notify"] = how
    path = tmp_path / "datamap-notices.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def _erase(app: Any, auth: dict[str, str], *, locale: str = "de") -> str:
    client = app.test_client()
    created = submit(client, type="erasure", locale=locale)
    assert client.post(f"/api/v1/requests/{created['id']}/verify", headers=auth).status_code == 200
    work_off(app)
    approved = client.post(f"/api/v1/requests/{created['id']}/approve", headers=auth)
    assert approved.status_code == 202, approved.get_json()
    work_off(app)
    return str(created["id"])


def _detail(app: Any, auth: dict[str, str], request_id: str) -> dict[str, Any]:
    return app.test_client().get(f"/api/v1/requests/{request_id}", headers=auth).get_json()


def _notices(detail: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["store"]: t for t in detail["tasks"] if t["action"] == "notify"}


def _letter(app: Any, auth: dict[str, str], request_id: str) -> str:
    client = app.test_client()
    artifacts = client.get(f"/api/v1/requests/{request_id}/artifacts", headers=auth).get_json()
    assert [a["kind"] for a in artifacts] == ["confirmation"], artifacts
    data = client.get(artifacts[0]["download_url"].replace("http://localhost", "")).data
    return " ".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages).replace("\u2010", "")


def _trail(app: Any) -> str:
    with app.extensions["dsr"].runtime.sessions() as session:
        return json.dumps([e.data for e in session.execute(select(AuditEvent)).scalars()], default=str)


def test_at37_every_recipient_of_erased_data_is_told_after_the_erasure_and_the_letter_names_them(
        own_stores, make_app, smtp, test_datamap, tmp_path):
    """AT-37: one notice per recipient of an erased category: by e-mail in the recipient's language, a
    manual one completed by the DPO office; none for a recipient of what was kept; the confirmation
    names exactly the recipients told."""
    path = _datamap(test_datamap, tmp_path, vonage={"via": "email", "email": PARTNER},
                    support_tool={"via": "email", "email": HELPDESK})  # aws stays manual
    app = make_app(datamap_path=path, smtp_url=smtp.url, mail_from="Datenschutz <dpo@dsr.example>")
    auth = dpo_auth(app)
    request_id = _erase(app, auth)

    detail = _detail(app, auth, request_id)
    reference = detail["reference"]
    told = _notices(detail)
    # Recipients of erased categories only: the auditor gets invoices, which are kept; tax authorities,
    # carriers and Google are not told (the map says why).
    assert set(told) == {"vonage", "support_tool", "aws"}, told
    assert "support_cases" in told["support_tool"]["counts"]["categories"]
    assert detail["status"] == "in_progress"  # aws is told by a person: the request waits for it
    assert {n: t["status"] for n, t in told.items()} == {"vonage": "done", "support_tool": "done", "aws": "waiting"}
    assert all(t["status"] == "done" for t in detail["tasks"] if t["action"] == "erase")

    # The mails arrived, each in its recipient's language, with the reference and what was erased.
    mails = {m["To"]: m for m in smtp.messages}
    assert set(mails) == {PARTNER, HELPDESK} and smtp.inbox.logins
    english, german = mails[PARTNER], mails[HELPDESK]
    assert reference in english["Subject"] and "Art. 19 GDPR" in english["Subject"]
    assert reference in german["Subject"] and "Art. 19 DSGVO" in german["Subject"]
    text_en, text_de = english.get_content(), german.get_content()
    assert "Dear Sir or Madam" in text_en and "Support requests" in text_en and "erase your copies" in text_en
    assert "Sehr geehrte Damen und Herren" in text_de and "Support-Anfragen" in text_de and "löschen Sie" in text_de
    assert english["From"] == "Datenschutz <dpo@dsr.example>" and english["Reply-To"] == "datenschutz@telekom.de"
    # The subject only as the recipient knows them: Vonage was given the account's e-mail address, the
    # help desk no identifier of the account; neither gets the subject's name.
    assert MAX in text_en and MAX not in text_de
    assert "Mustermann" not in text_en.replace(MAX, "") and "Mustermann" not in text_de

    # Each notice records recipient, channel, time and the server's answer.
    vonage = told["vonage"]["counts"]
    assert vonage["channel"] == "email" and vonage["transport"] == "smtp" and vonage["to"] == PARTNER
    assert vonage["answer"] == f"250 {QUEUED}" and vonage["message_id"] == english["Message-ID"]
    assert vonage["told_at"] and vonage["locale"] == "en" and told["support_tool"]["counts"]["locale"] == "de"
    # Told after the erasure: every notice follows every store's erasure in the audit trail.
    timeline = detail["timeline"]
    erased = [e["seq"] for e in timeline if e["action"] == "task.completed" and e["data"].get("action") == "erase"]
    sent = [e for e in timeline if e["action"] == "notice.sent"]
    assert erased and len(sent) == 2 and min(e["seq"] for e in sent) > max(erased)
    assert {e["data"]["recipient"]: e["data"]["channel"] for e in sent} == {"vonage": "email", "support_tool": "email"}

    # The DPO office tells AWS by hand; then the request completes and its letter names all three.
    assert tell_by_hand(app, app.test_client(), auth, request_id) == ["aws"]
    detail = _detail(app, auth, request_id)
    assert detail["status"] == "completed", [(t["store"], t["status"], t["error"]) for t in detail["tasks"]]
    aws = _notices(detail)["aws"]["counts"]
    assert aws["channel"] == "manual" and aws["told_at"] and aws["note"] == "told aws by letter"
    letter = _letter(app, auth, request_id)
    assert "Empfänger, die wir informiert haben" in letter
    for name in ("Vonage B.V.", "Support-Ticketsystem", "Amazon Web Services EMEA SARL"):
        assert name in letter, name
    for name in ("Prüfgesellschaft", "Google", "Finanzbehörden"):
        assert name not in letter, name
    assert len(smtp.messages) == 2  # nothing sent twice

    # The audit trail holds who was told, how and when: never the subject's data or the password.
    trail = _trail(app)
    for value in ("Mustermann", MAX, portal.DEMO_SUBJECT, PASSWORD):
        assert value not in trail


def test_without_an_smtp_server_the_notice_is_an_eml_file_and_a_store_that_was_not_asked_tells_nobody(
        own_stores, make_app, test_datamap, tmp_path, settings):
    """Development and the demo: no DSR_SMTP_URL, each mail is written to instance/mail. A recipient to
    be told through a store (``via: store``) whose erase task asked that store nothing (no erasure
    request, no confirmation) has not been told: a person tells it, and only then does the letter
    name it."""
    path = _datamap(test_datamap, tmp_path, vonage={"via": "email", "email": PARTNER},
                    support_tool={"via": "store", "store": "portal_db"},
                    aws={"via": "none", "reason": {"de": "Test", "en": "test"}})
    app = make_app(datamap_path=path)
    auth = dpo_auth(app)
    request_id = _erase(app, auth, locale="en")
    waiting = _notices(_detail(app, auth, request_id))["support_tool"]
    assert waiting["status"] == "waiting" and waiting["counts"]["channel"] == "manual"
    assert waiting["counts"]["planned"] == "store" and "portal_db was not asked" in waiting["counts"]["notes"][0]
    assert tell_by_hand(app, app.test_client(), auth, request_id) == ["support_tool"]
    detail = _detail(app, auth, request_id)
    assert detail["status"] == "completed", [(t["store"], t["status"], t["error"]) for t in detail["tasks"]]
    told = _notices(detail)
    assert set(told) == {"vonage", "support_tool"}  # aws: notify none, a documented decision
    planned = next(e for e in detail["timeline"] if e["action"] == "notice.planned")["data"]
    assert planned["recipients"] == {"support_tool": "store", "vonage": "email"}
    assert planned["not_told"]["aws"] == "none"

    vonage = told["vonage"]["counts"]
    eml = settings.instance_dir / "mail" / vonage["file"]
    assert vonage["transport"] == "file" and vonage["answer"] == eml.name and eml.is_file()
    content = eml.read_text(encoding="utf-8")
    assert f"To: {PARTNER}" in content and detail["reference"] in content and "Notice under Art. 19 GDPR" in content

    helpdesk = told["support_tool"]["counts"]
    assert helpdesk["channel"] == "manual" and helpdesk["told_at"] and helpdesk["note"] == "told support_tool by letter"
    letter = _letter(app, auth, request_id)
    assert "Recipients we have informed" in letter and "Vonage B.V." in letter
    assert "Support-Ticketsystem" in letter and "Amazon Web Services" not in letter


def test_a_notice_the_smtp_server_does_not_take_is_retried_then_fails_the_request_without_a_letter(
        own_stores, make_app, smtp, test_datamap, tmp_path, tls):
    """AT-37 escalation: the SMTP server is away; the job's retries try again, then the notice fails and
    so does the request (no letter may claim it). With the server back, running the notice again sends
    it and the letter follows."""
    path = _datamap(test_datamap, tmp_path, vonage={"via": "email", "email": PARTNER},
                    support_tool={"via": "none", "reason": {"de": "Test", "en": "test"}},
                    aws={"via": "none", "reason": {"de": "Test", "en": "test"}})
    app = make_app(datamap_path=path, smtp_url=smtp.url, retry_intervals=(0, 0))
    auth = dpo_auth(app)
    smtp.stop()
    request_id = _erase(app, auth)

    detail = _detail(app, auth, request_id)
    notice = _notices(detail)["vonage"]
    assert notice["status"] == "failed" and notice["attempts"] == 3, notice
    assert "ConnectionRefusedError" in notice["error"] and PASSWORD not in notice["error"]
    assert detail["status"] == "failed"
    assert all(t["status"] == "done" for t in detail["tasks"] if t["action"] == "erase")  # the erasure stands
    actions = [e["action"] for e in detail["timeline"]]
    assert actions.count("task.retrying") == 2 and "notice.sent" not in actions
    failed = next(e for e in detail["timeline"] if e["action"] == "request.failed")["data"]
    assert failed["recipients"] == {"vonage": "failed"} and "vonage" not in failed["stores"]
    client = app.test_client()
    assert client.get(f"/api/v1/requests/{request_id}/artifacts", headers=auth).get_json() == []

    back = LoopbackSmtp(tls, port=smtp.port).start()
    try:
        rerun = client.post(f"/api/v1/requests/{request_id}/tasks/{notice['id']}/rerun", headers=auth)
        assert rerun.status_code == 202, rerun.get_json()
        work_off(app)
    finally:
        back.stop()
    assert [m["To"] for m in back.messages] == [PARTNER]
    assert _detail(app, auth, request_id)["status"] == "completed"
    assert "Vonage B.V." in _letter(app, auth, request_id)


def test_a_manual_notice_waits_for_a_person_and_fails_once_its_deadline_has_passed(own_stores, make_app):
    """The tests' map tells every recipient by hand. A notice nobody completed by the processor deadline
    fails (escalation) and so does the request; run again and completed by hand, the letter follows."""
    app = make_app()
    auth = dpo_auth(app)
    request_id = _erase(app, auth)
    told = _notices(_detail(app, auth, request_id))
    assert set(told) == {"vonage", "support_tool", "aws"}
    assert all(t["status"] == "waiting" for t in told.values())

    # Ten days later the deadline check finds AWS not yet told (the job is scheduled for then; run it now).
    rt = app.extensions["dsr"].runtime
    with rt.sessions.begin() as session:
        task = session.get(Task, uuid.UUID(told["aws"]["id"]))
        assert task is not None and task.job_id  # the deadline check, not a poll: nothing runs before then
        task.checkpoint = {**task.checkpoint, "waiting_since": (utcnow() - timedelta(days=11)).isoformat()}
        attempts = task.attempts
    checked = notices.notify(rt.sessions, rt.datamap, rt.mailer, uuid.UUID(told["aws"]["id"]), final_attempt=False,
                             after_attempt=attempts, processor_deadline=timedelta(days=10))
    assert checked is not None and checked.status == "failed"
    assert checked.error and "aws was not told within 10 days" in checked.error
    # The others are told by hand; the request fails, with no letter.
    assert sorted(tell_by_hand(app, app.test_client(), auth, request_id)) == ["support_tool", "vonage"]
    assert _detail(app, auth, request_id)["status"] == "failed"

    client = app.test_client()
    assert client.post(f"/api/v1/requests/{request_id}/tasks/{told['aws']['id']}/rerun",
                       headers=auth).status_code == 202
    work_off(app)
    assert _notices(_detail(app, auth, request_id))["aws"]["status"] == "waiting"
    assert tell_by_hand(app, client, auth, request_id) == ["aws"]
    assert _detail(app, auth, request_id)["status"] == "completed"
    assert "Amazon Web Services EMEA SARL" in _letter(app, auth, request_id)


def test_a_second_erasure_that_erases_nothing_tells_nobody(own_stores, make_app, test_datamap, tmp_path):
    path = _datamap(test_datamap, tmp_path, vonage={"via": "email", "email": PARTNER},
                    support_tool={"via": "email", "email": HELPDESK}, aws={"via": "email", "email": "aws@example.com"})
    app = make_app(datamap_path=path)
    auth = dpo_auth(app)
    first = _erase(app, auth)
    assert _detail(app, auth, first)["status"] == "completed"
    second = _erase(app, auth)
    detail = _detail(app, auth, second)
    assert detail["status"] == "completed" and not _notices(detail)
    assert "Recipients we have informed" not in _letter(app, auth, second)
    assert "Empfänger, die wir informiert haben" not in _letter(app, auth, second)

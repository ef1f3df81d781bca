"""An erasure request end to end (Art. 17): preview, approval, every store erased, checked, confirmed.

Each test erases in stores of its own (``own_stores``): a demo portal, media folder and analytics
exports built for it, on the backend's kind of database.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pypdf import PdfReader
from sqlalchemy import Engine, MetaData, func, select, text
from sqlalchemy.engine import make_url

from dsr.cli import main
from dsr.db import make_engine
from dsr.demo import portal
from dsr.domain.accounts import create_api_token
from dsr.models import AuditEvent, Role, Suppression
from tests.conftest import SECRET
from tests.helpers import MAX, read_zip, submit, tell_by_hand, work_off


def _portal_counts(engine: Engine) -> dict[str, Counter[Any]]:
    """Rows per account in every portal table that refers to an account (directly or via its ticket)."""
    meta = MetaData()
    meta.reflect(engine)
    counts: dict[str, Counter[Any]] = {}
    with engine.connect() as conn:
        for name, table in meta.tables.items():
            if "account_id" in table.c:
                counts[name] = Counter(dict(conn.execute(
                    select(table.c.account_id, func.count()).group_by(table.c.account_id)).all()))
            elif name == "accounts":
                counts[name] = Counter(dict.fromkeys(conn.execute(select(table.c.id)).scalars(), 1))
    return counts


def _max_account(engine: Engine) -> Any:
    with engine.connect() as conn:
        return conn.execute(text("SELECT id FROM accounts WHERE lower(email) = :e"), {"e": MAX}).scalar_one()


def _pdf_text(data: bytes) -> str:
    return " ".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages).replace("\u2010", "")


def _detail(client: Any, auth: dict[str, str], request_id: str) -> dict[str, Any]:
    return client.get(f"/api/v1/requests/{request_id}", headers=auth).get_json()


def _erase(client: Any, auth: dict[str, str], app: Any, *, locale: str = "de") -> tuple[str, dict[str, Any]]:
    created = submit(client, type="erasure", locale=locale)
    assert client.post(f"/api/v1/requests/{created['id']}/verify", headers=auth).status_code == 200
    work_off(app)
    return created["id"], _detail(client, auth, created["id"])


def test_erasing_max_removes_what_is_erasable_keeps_what_the_law_keeps_and_leaves_everyone_else(
        own_stores, make_app, backend):
    app = make_app()
    client, auth = app.test_client(), _dpo(app)
    store = make_engine(own_stores.store_url)
    before, max_id = _portal_counts(store), _max_account(store)
    files_before = {p.relative_to(own_stores.media) for p in own_stores.media.rglob("*") if p.is_file()}

    request_id, detail = _erase(client, auth, app)
    # Previewed, nothing changed yet: the DPO approves first.
    assert detail["status"] == "awaiting_approval", detail
    preview = detail["preview"]
    assert "subject" not in preview  # the resolved identities stay inside
    assert preview["contract_ended"] is False  # the demo accounts are active
    tables = preview["stores"]["portal_db"]["tables"]
    assert tables["invoices"]["method"] == "retain" and tables["invoices"]["retained"] > 0
    assert tables["invoices"]["until"] == "vouchers" and "147" in tables["invoices"]["provision"]
    assert tables["accounts"]["method"] == "retain"  # the contract runs: the account stays
    assert tables["support_tickets"]["method"] == "delete" and tables["support_tickets"]["deleted"] > 0
    assert preview["stores"]["media"]["after"] == [] and preview["stores"]["portal_db"]["after"] == ["media"]
    assert _portal_counts(store) == before
    assert not detail["tasks"]

    approved = client.post(f"/api/v1/requests/{request_id}/approve", headers=auth)
    assert approved.status_code == 202, approved.get_json()
    work_off(app)
    # The tests' map tells every recipient by hand (Art. 19, tests/integration/test_art19_notices.py).
    assert _detail(client, auth, request_id)["status"] == "in_progress"
    assert sorted(tell_by_hand(app, client, auth, request_id)) == ["aws", "support_tool", "vonage"]
    detail = _detail(client, auth, request_id)
    assert detail["status"] == "completed", (detail["status"], [(t["store"], t["error"]) for t in detail["tasks"]])
    erase_tasks = {t["store"]: t["action"] for t in detail["tasks"] if t["action"] == "erase"}
    assert erase_tasks == dict.fromkeys(preview["stores"], "erase")

    # The database: Max's rows of every deleting table are gone, kept tables are as they were, and
    # every other account's rows are untouched.
    after = _portal_counts(store)
    for name, counter in before.items():
        others = {k: v for k, v in counter.items() if k != max_id}
        assert {k: v for k, v in after[name].items() if k != max_id} == others, name
        method = tables.get(name, {}).get("method")
        if method == "delete":
            assert after[name][max_id] == 0, name
        elif method == "retain":
            assert after[name][max_id] == counter[max_id], name
    # Media: exactly the files the preview counted are gone.
    files_after = {p.relative_to(own_stores.media) for p in own_stores.media.rglob("*") if p.is_file()}
    media_deleted = sum(t["deleted"] for t in preview["stores"]["media"]["tables"].values())
    assert media_deleted > 0 and len(files_before - files_after) == media_deleted and files_after <= files_before
    # The outcome the letter reports matches the preview.
    outcome = _detail(client, auth, request_id)["preview"]["outcome"]["stores"]["portal_db"]["tables"]
    assert outcome["support_tickets"]["deleted"] == tables["support_tickets"]["deleted"]

    # The confirmation letter, in the subject's language.
    artifacts = client.get(f"/api/v1/requests/{request_id}/artifacts", headers=auth).get_json()
    assert [a["kind"] for a in artifacts] == ["confirmation"]
    letter = _pdf_text(client.get(artifacts[0]["download_url"].replace("http://localhost", "")).data)
    assert "Löschung" in letter and "Rechnungen" in letter and "147" in letter
    # AT-30: the kept invoices' deletion day from the retention register (8 years after the end of the
    # invoice year: the demo's invoices are from the last two years, so not before 2030).
    invoices = letter[letter.index("Rechnungen und Buchungen"):][:600]
    day = re.search(r"Gelöscht am 1\. Januar (20\d\d) \((\d+) Datens", invoices)
    assert day and int(day.group(1)) >= 2030 and int(day.group(2)) == tables["invoices"]["retained"], invoices
    assert "Vonage B.V." in letter and "Amazon Web Services EMEA SARL" in letter  # the recipients told
    assert "portal-demo" not in letter and str(own_stores.media) not in letter

    # An access request now finds none of the erased records, and still the kept ones.
    access = submit(client, type="access")
    client.post(f"/api/v1/requests/{access['id']}/verify", headers=auth)
    work_off(app)
    url = client.get(f"/api/v1/requests/{access['id']}/artifacts", headers=auth).get_json()[0]["download_url"]
    package = read_zip(client.get(url.replace("http://localhost", "")).data)
    for store_name, planned in preview["stores"].items():
        for name, step in planned["tables"].items():
            rows = package.get(f"{store_name}/{name}.csv", [])
            if step["method"] == "delete":
                assert not rows, f"{store_name}/{name}"
            elif step["method"] == "retain" and step["retained"]:
                assert len(rows) == step["retained"], f"{store_name}/{name}"

    # The audit trail holds counts and references, never an erased value (AT-51).
    with app.extensions["dsr"].runtime.sessions() as session:
        trail = json.dumps([e.data for e in session.execute(select(AuditEvent)).scalars()], default=str)
    for value in ("Mustermann", MAX, portal.DEMO_SUBJECT):
        assert value not in trail
    store.dispose()


def test_a_second_erasure_finds_nothing_more_and_changes_nothing(own_stores, make_app):
    app = make_app(erasure_auto_approve=True)
    client, auth = app.test_client(), _dpo(app)
    first, detail = _erase(client, auth, app)
    assert detail["status"] == "in_progress", detail  # auto-approved: no call needed; recipients told by hand
    tell_by_hand(app, client, auth, first)
    assert _detail(client, auth, first)["status"] == "completed"
    store = make_engine(own_stores.store_url)
    before = _portal_counts(store)
    second, again = _erase(client, auth, app, locale="en")
    assert again["status"] == "completed", again  # nothing erased: no recipient to tell
    assert not [t for t in again["tasks"] if t["action"] == "notify"]
    for planned in again["preview"]["stores"].values():
        assert planned["touched"] == 0, planned
        assert all(t["deleted"] == 0 and t["changed"] == 0 for t in planned["tables"].values())
    assert _portal_counts(store) == before
    done = [e for e in again["timeline"] if e["action"] == "request.completed"]
    assert done and done[0]["data"]["deleted"] == 0 and done[0]["data"]["changed"] == 0
    artifacts = client.get(f"/api/v1/requests/{second}/artifacts", headers=auth).get_json()
    letter = _pdf_text(client.get(artifacts[0]["download_url"].replace("http://localhost", "")).data)
    assert "erasure" in letter.lower() and "Invoices" in letter
    store.dispose()


def test_an_erasure_over_the_bound_waits_for_the_dpo_even_when_approval_is_automatic(own_stores, make_app):
    app = make_app(erasure_auto_approve=True, erasure_bound=5)
    client, auth = app.test_client(), _dpo(app)
    store = make_engine(own_stores.store_url)
    before = _portal_counts(store)
    request_id, detail = _erase(client, auth, app)
    assert detail["status"] == "awaiting_approval"
    assert "portal_db" in detail["preview"]["over_bound"] and detail["preview"]["bound"] == 5
    refused = client.post(f"/api/v1/requests/{request_id}/approve", headers=auth)
    assert refused.status_code == 409 and "bound of 5" in refused.get_json()["message"]
    assert _portal_counts(store) == before
    assert client.post(f"/api/v1/requests/{request_id}/approve", headers=auth,
                       json={"allow_over_bound": True}).status_code == 202
    work_off(app)
    tell_by_hand(app, client, auth, request_id)
    assert _detail(client, auth, request_id)["status"] == "completed"
    assert _portal_counts(store) != before
    store.dispose()


def test_only_a_dpo_approves_and_only_a_previewed_erasure(own_stores, make_app):
    app = make_app()
    client, auth = app.test_client(), _dpo(app)
    with app.extensions["dsr"].runtime.sessions.begin() as session:
        _row, secret = create_api_token(session, name="agent", role=Role.AGENT)
    request_id, _ = _erase(client, auth, app)
    agent = client.post(f"/api/v1/requests/{request_id}/approve", headers={"Authorization": f"Bearer {secret}"})
    assert agent.status_code == 403
    access = submit(client, type="access")
    assert client.post(f"/api/v1/requests/{access['id']}/approve", headers=auth).status_code == 409
    assert client.post(f"/api/v1/requests/{request_id}/approve", headers=auth).status_code == 202
    assert client.post(f"/api/v1/requests/{request_id}/approve", headers=auth).status_code == 409  # only once


def test_at08_the_access_package_comes_before_the_erasure(own_stores, make_app):
    """AT-08: a subject asking for a copy and for erasure gets the copy first."""
    app = make_app(erasure_auto_approve=True)
    client, auth = app.test_client(), _dpo(app)
    access = submit(client, type="access")
    erasure = submit(client, type="erasure")
    client.post(f"/api/v1/requests/{access['id']}/verify", headers=auth)
    client.post(f"/api/v1/requests/{erasure['id']}/verify", headers=auth)
    work_off(app)
    tell_by_hand(app, client, auth, erasure["id"])
    first = _detail(client, auth, access["id"])
    second = _detail(client, auth, erasure["id"])
    assert first["status"] == "completed" and second["status"] == "completed", (first["status"], second["status"])
    url = client.get(f"/api/v1/requests/{access['id']}/artifacts", headers=auth).get_json()[0]["download_url"]
    package = read_zip(client.get(url.replace("http://localhost", "")).data)
    assert package["portal_db/support_tickets.csv"], "the copy was made before the tickets were erased"
    answered = next(e["at"] for e in first["timeline"] if e["action"] == "request.completed")
    previewed = next(e["at"] for e in second["timeline"] if e["action"] == "erasure.previewed")
    assert previewed >= answered


def _dpo(app: Any) -> dict[str, str]:
    with app.extensions["dsr"].runtime.sessions.begin() as session:
        _row, secret = create_api_token(session, name="dpo", role=Role.DPO)
    return {"Authorization": f"Bearer {secret}"}


def test_at32_a_backup_restored_after_an_erasure_is_erased_again_by_the_replay(own_stores, make_app, backend,
                                                                                settings, tmp_path):
    """AT-32: a backup taken before the erasure is restored (the database dump and the media folder);
    `dsr erasures replay --since` finds the subject by the keyed hashes alone and erases him again."""
    app = make_app(erasure_auto_approve=True)
    client, auth = app.test_client(), _dpo(app)
    store = make_engine(own_stores.store_url)
    before = _portal_counts(store)
    backup = _Backup(own_stores, tmp_path / "backup", backend.real)
    request_id, _ = _erase(client, auth, app)
    tell_by_hand(app, client, auth, request_id)
    assert _detail(client, auth, request_id)["status"] == "completed"
    erased, erased_media = _portal_counts(store), _media(own_stores)
    assert erased != before and erased_media != backup.media_files
    with app.extensions["dsr"].runtime.sessions() as session:
        entry = session.execute(select(Suppression)).scalar_one()
        assert str(entry.request_id) == request_id and set(entry.stores) >= {"portal_db", "media", "analytics"}
        stored = json.dumps(entry.identities) + json.dumps(entry.stores)
    for value in (MAX, "Mustermann", "max.mustermann"):
        assert value not in stored  # keyed hashes and plans only

    app.extensions["dsr"].runtime.close()
    store.dispose()
    backup.restore()
    assert _portal_counts(store) == before and _media(own_stores) == backup.media_files  # Max is back
    env = {"DSR_DATABASE_URL": backend.database_url, "DSR_INSTANCE_DIR": str(settings.instance_dir),
           "DSR_DATAMAP": str(settings.datamap_path), "DSR_SECRET_KEY": SECRET, "DSR_REDIS_URL": None, "DSR_ENV": None}
    dry = CliRunner().invoke(main, ["erasures", "replay", "--since", "2000-01-01", "--dry-run"], env=env)
    assert dry.exit_code == 0, dry.output
    assert "1 subject(s) found again" in dry.output and "would erase" in dry.output
    assert _portal_counts(store) == before
    done = CliRunner().invoke(main, ["erasures", "replay", "--since", "2000-01-01"], env=env)
    assert done.exit_code == 0, done.output
    assert _portal_counts(store) == erased
    assert _media(own_stores) == erased_media
    again = CliRunner().invoke(main, ["erasures", "replay", "--since", "2000-01-01"], env=env)
    assert again.exit_code == 0 and "erased 0 record(s) again" in again.output, again.output
    later = CliRunner().invoke(main, ["erasures", "replay", "--since", "2999-01-01"], env=env)
    assert "0 erasure(s)" in later.output
    store.dispose()


def _media(stores: Any) -> set[str]:
    return {str(p.relative_to(stores.media)) for p in stores.media.rglob("*") if p.is_file()}


class _Backup:
    """A copy of the store database (pg_dump, or the SQLite file) and of the media folder."""

    def __init__(self, stores: Any, folder: Path, real: bool) -> None:
        self.stores, self.folder, self.real = stores, folder, real
        folder.mkdir()
        self.media_files = _media(stores)
        shutil.copytree(stores.media, folder / "media")
        if real:
            subprocess.run(["pg_dump", "--format=custom", "--file", str(folder / "store.dump"),
                            _libpq(stores.store_url)], check=True)
        else:
            shutil.copyfile(make_url(stores.store_url).database, folder / "store.sqlite")

    def restore(self) -> None:
        shutil.rmtree(self.stores.media)
        shutil.copytree(self.folder / "media", self.stores.media)
        if self.real:
            subprocess.run(["pg_restore", "--clean", "--if-exists", "--no-owner", "--dbname",
                            _libpq(self.stores.store_url), str(self.folder / "store.dump")], check=True)
        else:
            shutil.copyfile(self.folder / "store.sqlite", make_url(self.stores.store_url).database)


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.mark.parametrize("ended", [False, True], ids=["contract-running", "contract-ended"])
def test_at34_while_the_contract_runs_the_letter_explains_and_offers_termination_and_the_rest_goes_at_once(
        own_stores, make_app, ended):
    """AT-34 (ER-03): the account's status (data map `contract:`) decides. While the contract runs,
    usage and payment means stay, the letter says why and offers termination, and analytics, tickets
    and media go at once; once it has ended, those go too and the letter offers nothing."""
    store = make_engine(own_stores.store_url)
    max_id = _max_account(store)
    if ended:
        with store.begin() as conn:
            conn.execute(text("UPDATE accounts SET status = 'closed' WHERE id = :id"), {"id": max_id})
    before = _portal_counts(store)
    app = make_app(erasure_auto_approve=True)
    client, auth = app.test_client(), _dpo(app)
    request_id, _ = _erase(client, auth, app, locale="en")
    tell_by_hand(app, client, auth, request_id)
    detail = _detail(client, auth, request_id)
    assert detail["status"] == "completed", detail
    preview = detail["preview"]
    assert preview["contract_ended"] is ended
    after = _portal_counts(store)
    for table in ("api_usage", "payment_methods"):
        assert before[table][max_id] > 0
        assert after[table][max_id] == (0 if ended else before[table][max_id]), table
    assert after["support_tickets"][max_id] == 0
    assert sum(t["deleted"] for t in preview["stores"]["analytics"]["tables"].values()) > 0
    artifacts = client.get(f"/api/v1/requests/{request_id}/artifacts", headers=auth).get_json()
    letter = " ".join(_pdf_text(client.get(artifacts[0]["download_url"].replace("http://localhost", "")).data).split())
    assert ("terminate your contract" in letter) is not ended, letter[:3000]
    assert ("Your contract with us is still running" in letter) is not ended
    store.dispose()


def test_staff_reached_only_through_erased_notes_do_not_fail_the_check(own_stores, make_app):
    """Our staff are not the subject's data: once the notes that named them are erased, fewer staff are
    linked to the subject, and the check after the erasure must not take that for a lost kept record."""
    store = make_engine(own_stores.store_url)
    with store.connect() as conn:
        emails = list(conn.execute(text("SELECT email FROM accounts ORDER BY id")).scalars())
    app = make_app(erasure_auto_approve=True)
    client, auth = app.test_client(), _dpo(app)
    changed = 0
    for email in emails[:6]:
        created = submit(client, type="erasure", email=email)
        client.post(f"/api/v1/requests/{created['id']}/verify", headers=auth)
        work_off(app)
        tell_by_hand(app, client, auth, created["id"])
        detail = _detail(client, auth, created["id"])
        assert detail["status"] == "completed", (email, [e for e in detail["timeline"]
                                                         if e["action"] == "erasure.verification_failed"])
        changed += detail["preview"]["stores"]["portal_db"]["tables"]["employees"]["retained"]
    assert changed > 0
    store.dispose()


def test_at08_an_access_request_verified_after_the_preview_holds_the_approval(own_stores, make_app):
    """AT-08 also when the copy is asked for after the erasure was previewed: the approval waits for it."""
    app = make_app()
    client, auth = app.test_client(), _dpo(app)
    request_id, detail = _erase(client, auth, app)
    assert detail["status"] == "awaiting_approval"
    access = submit(client, type="access")
    client.post(f"/api/v1/requests/{access['id']}/verify", headers=auth)
    held = client.post(f"/api/v1/requests/{request_id}/approve", headers=auth)
    assert held.status_code == 409 and "copy first" in held.get_json()["message"]
    work_off(app)  # the access request is answered
    assert _detail(client, auth, access["id"])["status"] == "completed"
    assert client.post(f"/api/v1/requests/{request_id}/approve", headers=auth).status_code == 202
    work_off(app)
    tell_by_hand(app, client, auth, request_id)
    assert _detail(client, auth, request_id)["status"] == "completed"

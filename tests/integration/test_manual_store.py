"""A manual store: the task waits for a person, who completes it with a note and files as evidence."""

from __future__ import annotations

import hashlib
import io
import zipfile

import pytest
import yaml

from tests.helpers import dpo_auth, submit, work_off

ARCHIVE = {
    "connector": "manual",
    "description": {"de": "Papierarchiv (Verträge)", "en": "paper archive (contracts)"},
    "deadline_days": 7,
    "connection": {
        "instructions": {"de": "Ordner im Archiv Bonn prüfen und Treffer einscannen",
                         "en": "check the folders in the Bonn archive and scan what is found"},
        "contact": "archiv@example.com",
    },
    "tables": {"letters": {"category": "support_cases"}},
}


@pytest.fixture
def manual_app(make_app, test_datamap, tmp_path):
    raw = yaml.safe_load(test_datamap.read_text(encoding="utf-8"))
    raw["stores"]["paper_archive"] = ARCHIVE
    path = tmp_path / "datamap.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return make_app(datamap_path=path)


def test_a_manual_task_waits_and_is_completed_by_hand_with_evidence(manual_app):
    app, client, auth = manual_app, manual_app.test_client(), dpo_auth(manual_app)
    created = submit(client)
    client.post(f"/api/v1/requests/{created['id']}/verify", headers=auth)
    work_off(app)

    detail = client.get(f"/api/v1/requests/{created['id']}", headers=auth).get_json()
    tasks = {t["store"]: t for t in detail["tasks"]}
    assert detail["status"] == "in_progress"  # the other stores are done; the archive waits for a person
    assert tasks["paper_archive"]["status"] == "waiting"
    assert "Bonn archive" in tasks["paper_archive"]["counts"]["notes"][0]
    path = f"/api/v1/requests/{created['id']}/tasks/{tasks['paper_archive']['id']}/complete"

    scan = b"%PDF-1.4 make-believe scan of a contract letter\n"
    note = "Ordner 2024/M durchsucht: ein Vertragsschreiben gefunden und eingescannt."

    def form() -> dict[str, object]:
        return {"note": note, "evidence": (io.BytesIO(scan), "vertrag-2024.pdf")}

    assert client.post(path, data=form(), content_type="multipart/form-data").status_code == 401
    missing = client.post(path, data={"note": ""}, headers=auth, content_type="multipart/form-data")
    assert missing.status_code == 422  # a note is required
    done = client.post(path, data=form(), headers=auth, content_type="multipart/form-data")
    assert done.status_code == 200, done.get_json()
    assert done.get_json()["status"] == "done"
    again = client.post(path, data={"note": "again"}, headers=auth, content_type="multipart/form-data")
    assert again.status_code == 409
    work_off(app)

    detail = client.get(f"/api/v1/requests/{created['id']}", headers=auth).get_json()
    assert detail["status"] == "completed"
    event = next(e for e in detail["timeline"] if e["action"] == "task.completed_by_hand")
    assert event["data"]["evidence"] == [{"sha256": hashlib.sha256(scan).hexdigest(), "size": len(scan)}]
    assert "Ordner" not in str(event["data"])  # the note's hash, not its text, is in the trail
    url = client.get(f"/api/v1/requests/{created['id']}/artifacts", headers=auth).get_json()[0]["download_url"]
    with zipfile.ZipFile(io.BytesIO(client.get(url.replace("http://localhost", "")).data)) as package:
        assert package.read("paper_archive/evidence/vertrag-2024.pdf") == scan

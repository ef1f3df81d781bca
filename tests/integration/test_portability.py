"""Portability (Art. 20): only categories the data map marks portable, and the package says what was left out."""

from __future__ import annotations

import io
import json
import zipfile

from tests.helpers import MAX, read_zip, submit


def test_a_portability_export_omits_non_portable_categories(client, auth, run_jobs, app):
    datamap = app.extensions["dsr"].runtime.datamap
    created = submit(client, type="portability")
    client.post(f"/api/v1/requests/{created['id']}/verify", headers=auth)
    run_jobs()
    detail = client.get(f"/api/v1/requests/{created['id']}", headers=auth).get_json()
    assert detail["status"] == "completed", detail
    url = client.get(f"/api/v1/requests/{created['id']}/artifacts", headers=auth).get_json()[0]["download_url"]
    data = client.get(url.replace("http://localhost", "")).data
    tables = read_zip(data)

    portable = {cid for cid, c in datamap.categories.items() if c.portable}
    for store in datamap.stores.values():
        for name, table in store.tables.items():
            path = f"{store.name}/{name}.csv"
            any_portable = table.category in portable or any(r.category in portable for r in table.fields.values())
            assert (path in tables) == any_portable, path
            for column, rule in table.fields.items():
                if tables.get(path) and rule.category not in portable:
                    assert column not in tables[path][0], (path, column)
    assert "portal_db/consents.csv" not in tables  # consent records: legal obligation, not portable
    assert "web_logs/requests.csv" not in tables  # legitimate interest: not portable
    assert {r["email"] for r in tables["portal_db/accounts.csv"]} == {MAX}
    with zipfile.ZipFile(io.BytesIO(data)) as package:
        manifest = json.loads(package.read("manifest.json"))
    assert manifest["scope"].startswith("portability")
    assert "consent_log" in manifest["left_out_categories"] and "web_server_logs" in manifest["left_out_categories"]
    assert "consents" in manifest["left_out"]["portal_db"] and "requests" in manifest["left_out"]["web_logs"]


def test_an_access_export_keeps_every_category(client, auth, run_jobs):
    created = submit(client, type="access")
    client.post(f"/api/v1/requests/{created['id']}/verify", headers=auth)
    run_jobs()
    url = client.get(f"/api/v1/requests/{created['id']}/artifacts", headers=auth).get_json()[0]["download_url"]
    tables = read_zip(client.get(url.replace("http://localhost", "")).data)
    assert "portal_db/consents.csv" in tables and "web_logs/requests.csv" in tables

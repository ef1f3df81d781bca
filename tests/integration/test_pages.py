"""The landing page and the health endpoints."""

from __future__ import annotations


def test_landing_page_speaks_german_and_english(client):
    german = client.get("/?lang=de")
    assert german.status_code == 200
    assert "Ihre Datenschutzrechte" in german.text and 'lang="de"' in german.text
    english = client.get("/", headers={"Accept-Language": "en-GB,en;q=0.9"})
    assert "Your data protection rights" in english.text and 'lang="en"' in english.text
    assert "Telekom Deutschland GmbH" in english.text  # the controller comes from the data map
    assert client.get("/?lang=fr").status_code == 200  # unknown language falls back to German


def test_health_and_readiness(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["problems"] == {}


def test_readiness_reports_an_unreachable_queue(client, app, monkeypatch):
    import redis

    def down() -> None:
        raise redis.exceptions.ConnectionError("down")

    monkeypatch.setattr(app.extensions["dsr"].queue.connection, "ping", down)
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.get_json()["problems"] == {"queue": "ConnectionError"}

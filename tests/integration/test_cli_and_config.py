"""Configuration fails early and clearly; the ``dsr`` command works against the real database;
and on the real services a separate, forking ``dsr worker`` process carries a request to the end.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import inspect, select

from dsr.cli import main
from dsr.config import ConfigError, Settings
from dsr.db import make_engine
from dsr.demo import portal
from dsr.domain.audit import verify_chain
from dsr.models import ApiToken, AuditEvent, User
from dsr.web.app import create_app
from tests.conftest import SECRET
from tests.helpers import MAX, submit

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION_OK = {
    "DSR_ENV": "production", "DSR_SECRET_KEY": "s" * 32, "DSR_DATABASE_URL": "postgresql+psycopg://dsr@db/dsr",
    "DSR_REDIS_URL": "redis://redis:6379/0", "DSR_BASE_URL": "https://dsr.example.com",
}


# --- configuration ------------------------------------------------------------------------


def test_production_names_every_missing_variable():
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"DSR_ENV": "production"}).checked()
    message = str(caught.value)
    for name in ("DSR_SECRET_KEY", "DSR_DATABASE_URL", "DSR_REDIS_URL", "DSR_BASE_URL"):
        assert name in message


def test_production_needs_the_base_url_that_links_are_built_from():
    env = {k: v for k, v in PRODUCTION_OK.items() if k != "DSR_BASE_URL"}
    with pytest.raises(ConfigError, match=r"needs DSR_BASE_URL: set") as caught:
        Settings.from_env(env).checked()
    assert "DSR_SECRET_KEY" not in str(caught.value)
    assert Settings.from_env(PRODUCTION_OK).checked().public_url == "https://dsr.example.com"


@pytest.mark.parametrize("raw", ["dsr.example.com", "ftp://dsr.example.com", "https://", "https://dsr.example.com/?a=1",
                                 "https://dsr.example.com/#top"])
def test_a_base_url_that_is_not_an_absolute_http_address_is_named(raw):
    with pytest.raises(ConfigError, match=f"DSR_BASE_URL must be .* got {re.escape(repr(raw))}"):
        Settings.from_env({"DSR_BASE_URL": raw})


def test_links_are_rooted_at_the_base_url_else_the_served_address_never_a_request(tmp_path):
    assert Settings.from_env({"DSR_BASE_URL": "https://dsr.example.com/office/"}).public_url == \
        "https://dsr.example.com/office"
    assert Settings.from_env({}).public_url == "http://localhost"
    assert Settings(server_url="http://127.0.0.1:8080").public_url == "http://127.0.0.1:8080"
    assert Settings(base_url="https://dsr.example.com", server_url="http://127.0.0.1:8080").public_url == \
        "https://dsr.example.com"


def test_production_names_only_what_is_missing():
    env = {**PRODUCTION_OK, "DSR_REDIS_URL": "  "}  # blank counts as missing
    with pytest.raises(ConfigError, match="DSR_REDIS_URL") as caught:
        Settings.from_env(env).checked()
    assert "DSR_SECRET_KEY" not in str(caught.value) and "DSR_DATABASE_URL" not in str(caught.value)
    assert Settings.from_env(PRODUCTION_OK).checked().production


def test_production_refuses_a_short_secret():
    with pytest.raises(ConfigError, match=r"DSR_SECRET_KEY.*32"):
        Settings.from_env({**PRODUCTION_OK, "DSR_SECRET_KEY": "s" * 31}).checked()


def test_development_needs_nothing(tmp_path):
    settings = Settings.from_env({"DSR_INSTANCE_DIR": str(tmp_path)}).checked()
    assert not settings.production
    assert settings.sqlalchemy_url == f"sqlite:///{tmp_path / 'dsr.sqlite'}"
    assert settings.artifact_dir == tmp_path / "artifacts"
    secret = settings.resolved_secret_key()
    assert len(secret) >= 32 and settings.resolved_secret_key() == secret  # kept across restarts


@pytest.mark.parametrize("name", ["DSR_TARGET_BUFFER_DAYS", "DSR_ARTIFACT_TTL_DAYS", "DSR_DOWNLOAD_LINK_TTL",
                                  "DSR_PROCESSOR_DEADLINE_DAYS", "DSR_REPORT_PREVIEW_ROWS"])
def test_a_bad_integer_names_its_variable(name):
    with pytest.raises(ConfigError, match=f"{name} must be a whole number.*'five'"):
        Settings.from_env({name: "five"})


@pytest.mark.parametrize("value", ["-1", "101"])
def test_report_preview_rows_must_be_between_0_and_100(value):
    with pytest.raises(ConfigError, match=f"DSR_REPORT_PREVIEW_ROWS must be between 0 and 100, got {value}"):
        Settings.from_env({"DSR_REPORT_PREVIEW_ROWS": value})
    assert Settings.from_env({}).report_preview_rows == 10
    assert Settings.from_env({"DSR_REPORT_PREVIEW_ROWS": "0"}).report_preview_rows == 0


@pytest.mark.parametrize("raw", ["5,x", "10;20", "-5"])
def test_bad_retry_intervals_are_refused(raw):
    with pytest.raises(ConfigError, match="DSR_JOB_RETRY_INTERVALS"):
        Settings.from_env({"DSR_JOB_RETRY_INTERVALS": raw})


def test_retry_intervals_are_read():
    assert Settings.from_env({"DSR_JOB_RETRY_INTERVALS": "1, 2,3"}).retry_intervals == (1, 2, 3)
    assert Settings.from_env({}).retry_intervals == (10, 60, 300)
    assert Settings.from_env({"DSR_JOB_RETRY_INTERVALS": "none"}).retry_intervals == ()


def test_an_unknown_mode_is_refused():
    with pytest.raises(ConfigError, match="DSR_ENV"):
        Settings.from_env({"DSR_ENV": "prod"})


@pytest.mark.parametrize("value", ["0", "false", "no"])
def test_the_embedded_worker_can_be_switched_off(value):
    assert Settings.from_env({"DSR_EMBEDDED_WORKER": value}).embedded_worker is False


@pytest.mark.parametrize("value", ["False", "NO", "off"])
def test_the_embedded_worker_switch_ignores_case(value):
    assert Settings.from_env({"DSR_EMBEDDED_WORKER": value}).embedded_worker is False


def test_create_app_in_production_without_a_secret_fails_at_start_up(tmp_path, monkeypatch):
    monkeypatch.setenv("DSR_ENV", "production")
    monkeypatch.delenv("DSR_SECRET_KEY", raising=False)
    monkeypatch.setenv("DSR_DATABASE_URL", f"sqlite:///{tmp_path / 'never.sqlite'}")
    monkeypatch.setenv("DSR_REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("DSR_INSTANCE_DIR", str(tmp_path / "instance"))
    with pytest.raises(ConfigError, match="DSR_SECRET_KEY"):
        create_app()
    with pytest.raises(ConfigError, match="DSR_SECRET_KEY"):
        create_app(Settings.from_env({"DSR_ENV": "production", "DSR_DATABASE_URL": "sqlite://",
                                      "DSR_REDIS_URL": "redis://127.0.0.1:1/0"}))
    assert not (tmp_path / "never.sqlite").exists()  # failed before touching anything
    assert not (tmp_path / "instance" / "secret_key").exists()


def test_the_cli_reports_a_config_error_without_a_traceback(tmp_path):
    result = CliRunner().invoke(main, ["audit", "verify"], env={
        "DSR_ENV": "production", "DSR_SECRET_KEY": None, "DSR_DATABASE_URL": None, "DSR_REDIS_URL": None,
        "DSR_INSTANCE_DIR": str(tmp_path),
    })
    assert result.exit_code == 1
    assert "DSR_SECRET_KEY" in result.output and "Traceback" not in result.output


# --- the dsr command against the backend database -----------------------------------------


def _env(backend, tmp_path: Path, **extra: str | None) -> dict[str, str | None]:  # type: ignore[no-untyped-def]
    return {
        "DSR_ENV": None,
        "DSR_DATABASE_URL": backend.database_url,
        "DSR_INSTANCE_DIR": str(tmp_path / "cli-instance"),
        "DSR_PORTAL_DB_URL": backend.store_url,
        "DSR_SECRET_KEY": SECRET,
        "DSR_REDIS_URL": None,
        **extra,
    }


def _dsr(args: list[str], env: dict[str, str | None]) -> Result:
    return CliRunner().invoke(main, ["--log-level", "WARNING", *args], env=env)


def test_db_upgrade_is_idempotent(backend, clean_db, tmp_path):
    for _ in range(2):
        result = _dsr(["db", "upgrade"], _env(backend, tmp_path))
        assert result.exit_code == 0, result.output
        assert "is at revision head" in result.output

    fresh = f"sqlite:///{tmp_path / 'fresh' / 'dsr.sqlite'}"
    for _ in range(2):
        result = _dsr(["db", "upgrade"], _env(backend, tmp_path, DSR_DATABASE_URL=fresh))
        assert result.exit_code == 0, result.output
    engine = make_engine(fresh)
    try:
        assert "audit_events" in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_db_upgrade_does_not_print_the_database_password(backend, clean_db, tmp_path):
    if not backend.real:
        pytest.skip("only a server URL has a password")
    from sqlalchemy.engine import make_url

    url = make_url(backend.database_url)
    password = url.password or "hunter2-secret"  # the real one, or any (the test server trusts local users)
    result = _dsr(["db", "upgrade"], _env(backend, tmp_path, DSR_DATABASE_URL=url.set(password=password)
                                          .render_as_string(hide_password=False)))
    assert result.exit_code == 0, result.output
    assert "***" in result.output
    assert str(password) not in result.output


def test_create_api_token_prints_a_secret_that_authenticates_and_is_stored_only_as_a_hash(client, backend, tmp_path,
                                                                                          app):
    result = _dsr(["create-api-token", "--role", "dpo", "--name", "ops"], _env(backend, tmp_path))
    assert result.exit_code == 0, result.output
    secret = result.output.strip()
    assert secret.startswith("dsr_") and len(secret) > 40 and "\n" not in secret

    missing = f"/api/v1/requests/{uuid.uuid4()}"
    assert client.get(missing, headers={"Authorization": f"Bearer {secret}"}).status_code == 404  # authenticated
    assert client.get(missing, headers={"Authorization": f"Bearer {secret[:-2]}xy"}).status_code == 401
    assert client.get(missing).status_code == 401
    created = submit(client)
    detail = client.get(f"/api/v1/requests/{created['id']}", headers={"Authorization": f"Bearer {secret}"})
    assert detail.status_code == 200 and detail.get_json()["reference"] == created["reference"]

    with app.extensions["dsr"].runtime.sessions() as session:
        [row] = session.execute(select(ApiToken)).scalars().all()
        assert (row.name, row.role) == ("ops", "dpo")
        assert row.token_sha256 == hashlib.sha256(secret.encode()).hexdigest()
        assert row.last_used_at is not None
        assert verify_chain(session).ok
        events = session.execute(select(AuditEvent.data)).scalars().all()
    with app.extensions["dsr"].runtime.engine.connect() as conn:
        stored = [conn.execute(select(table)).all() for table in (ApiToken.__table__, AuditEvent.__table__)]
    body = secret.removeprefix("dsr_")
    assert not any(body in str(value) for rows in stored for row in rows for value in row)
    assert not any(body in str(data) for data in events)


def test_create_user_refuses_a_short_password_and_a_duplicate_email(backend, clean_db, tmp_path):
    env = _env(backend, tmp_path)
    short = _dsr(["create-user", "--email", "dpo@example.com", "--name", "DPO", "--password", "short-pw"], env)
    assert short.exit_code != 0
    assert "at least 12 characters" in short.output and "Traceback" not in short.output

    good = _dsr(["create-user", "--email", "dpo@example.com", "--name", "DPO", "--role", "dpo",
                 "--password", "a-long-enough-password"], env)
    assert good.exit_code == 0, good.output
    assert "user dpo@example.com created with role dpo" in good.output

    again = _dsr(["create-user", "--email", "DPO@Example.com", "--name", "Other", "--password",
                  "another-long-password"], env)
    assert again.exit_code != 0
    assert "exists already" in again.output and "Traceback" not in again.output

    prompted = CliRunner().invoke(main, ["create-user", "--email", "agent@example.com", "--name", "Agent"], env=env,
                                  input="a-long-enough-password\na-long-enough-password\n")
    assert prompted.exit_code == 0, prompted.output

    engine = make_engine(backend.database_url)
    try:
        with engine.connect() as conn:
            users = conn.execute(select(User.email, User.role, User.password_hash).order_by(User.email)).all()
    finally:
        engine.dispose()
    assert [(u.email, u.role) for u in users] == [("agent@example.com", "agent"), ("dpo@example.com", "dpo")]
    assert all(u.password_hash.startswith("$argon2id$") for u in users)
    assert not any("a-long-enough-password" in u.password_hash for u in users)


def _store_contents(path: Path) -> dict[str, list[tuple[object, ...]]]:
    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            return {t.name: [tuple(r) for r in conn.execute(select(t).order_by(*t.primary_key.columns))]
                    for t in portal.metadata.sorted_tables}
    finally:
        engine.dispose()


def test_demo_data_builds_a_deterministic_store_with_the_demo_subject(tmp_path):
    env = {"DSR_INSTANCE_DIR": str(tmp_path / "instance"), "DSR_ENV": None, "DSR_DATABASE_URL": None}
    outputs, contents = [], []
    for name in ("x.sqlite", "y.sqlite"):
        result = _dsr(["demo-data", "--url", f"sqlite:///{tmp_path / name}", "--subjects", "5", "--rows", "9"], env)
        assert result.exit_code == 0, result.output
        outputs.append(result.output)
        contents.append(_store_contents(tmp_path / name))
    first = contents[0]
    assert first == contents[1]
    total = sum(len(rows) for rows in first.values())
    assert f": {total} rows in {len(first)} tables" in outputs[0]
    assert len(first["accounts"]) == 5
    assert MAX in {row[2] for row in first["accounts"]}  # id, customer_number, email, ...

    other = _dsr(["demo-data", "--url", f"sqlite:///{tmp_path / 'z.sqlite'}", "--subjects", "5", "--rows", "9",
                  "--seed", "7"], env)
    assert other.exit_code == 0, other.output
    assert _store_contents(tmp_path / "z.sqlite") != first


def test_worker_without_redis_says_why(backend, clean_db, tmp_path):
    result = _dsr(["worker", "--burst"], _env(backend, tmp_path))
    assert result.exit_code != 0
    assert "DSR_REDIS_URL is not set" in result.output


# --- the production worker path: a separate, forking worker process -----------------------


def test_a_separate_forking_worker_process_completes_a_request(backend, settings, client, auth):
    if not backend.real:
        pytest.skip("a separate worker process needs the real PostgreSQL and Redis")
    created = submit(client)
    assert client.post(f"/api/v1/requests/{created['id']}/verify", headers=auth).status_code == 200

    env = {k: v for k, v in os.environ.items() if not k.startswith("DSR_")}
    env.update({
        "DSR_DATABASE_URL": backend.database_url, "DSR_REDIS_URL": backend.redis_url or "",
        "DSR_QUEUE": settings.queue_name, "DSR_PORTAL_DB_URL": backend.store_url, "DSR_SECRET_KEY": SECRET,
        "DSR_STORAGE_DIR": str(settings.storage_dir), "DSR_INSTANCE_DIR": str(settings.instance_dir),
        "DSR_JOB_RETRY_INTERVALS": "none", "DSR_MEDIA_DIR": str(backend.media),
        "DSR_ANALYTICS_DIR": str(backend.analytics),
        "DSR_DATAMAP": str(settings.datamap_path),
    })
    deadline = time.monotonic() + 60
    status, runs, logs = None, 0, []
    while time.monotonic() < deadline:
        process = subprocess.Popen([sys.executable, "-m", "dsr.cli", "--log-level", "WARNING", "worker", "--burst"],
                                   env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            out, _ = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            out, _ = process.communicate()
        logs.append(out)
        runs += 1
        assert process.returncode == 0, out
        status = client.get(f"/api/v1/requests/{created['id']}", headers=auth).get_json()["status"]
        if status in ("completed", "failed"):
            break
    assert status == "completed", (status, runs, logs)

    detail = client.get(f"/api/v1/requests/{created['id']}", headers=auth).get_json()
    assert {t["status"] for t in detail["tasks"]} == {"done"} and len(detail["tasks"]) == 5
    [artifact] = client.get(f"/api/v1/requests/{created['id']}/artifacts", headers=auth).get_json()
    assert artifact["kind"] == "package"
    download = client.get(artifact["download_url"].replace("http://localhost", ""))
    assert download.status_code == 200
    assert hashlib.sha256(download.data).hexdigest() == artifact["sha256"]
    assert len(download.data) == artifact["size"]

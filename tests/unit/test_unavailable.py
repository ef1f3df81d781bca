"""Which database errors mean 'unreachable, try again' (503) and which are bugs (500)."""

from __future__ import annotations

import sqlite3

import pytest
import sqlalchemy.exc
from sqlalchemy import create_engine, text

from dsr.config import ConfigError, Settings
from dsr.web.unavailable import database_unreachable


def _raised(url: str, statement: str) -> BaseException:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text(statement))
    except Exception as exc:
        return exc
    finally:
        engine.dispose()
    raise AssertionError("no error")


def test_a_sqlite_file_that_cannot_be_opened_is_unreachable(tmp_path):
    (tmp_path / "db.sqlite").mkdir()  # a folder where the file should be
    assert database_unreachable(_raised(f"sqlite:///{tmp_path / 'db.sqlite'}", "SELECT 1"))


def test_a_wrong_statement_is_a_bug_not_an_outage(tmp_path):
    exc = _raised(f"sqlite:///{tmp_path / 'db.sqlite'}", "SELECT * FROM no_such_table")
    assert isinstance(exc, sqlalchemy.exc.OperationalError) and isinstance(exc.orig, sqlite3.OperationalError)
    assert not database_unreachable(exc)


def test_a_refused_postgresql_connection_is_unreachable():
    # Port 9 (discard) is closed on loopback: the connect is refused at once.
    assert database_unreachable(_raised("postgresql+psycopg://nobody@127.0.0.1:9/none", "SELECT 1"))


@pytest.mark.parametrize(("name", "value"), [("DSR_TASK_LEASE_SECONDS", "2"), ("DSR_SWEEP_SECONDS", "0"),
                                             ("DSR_WORKER_MAINTENANCE_SECONDS", "0"),
                                             ("DSR_JOB_GRACE_SECONDS", "soon")])
def test_recovery_settings_out_of_range_are_named(name, value):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def test_every_operation_of_the_contract_declares_the_503_with_retry_after() -> None:
    """A client generated from the OpenAPI document knows the 503 and to send again (issue 11)."""
    import tempfile
    from pathlib import Path

    import openapi_spec_validator

    from dsr.config import Settings
    from dsr.web.app import create_app

    tmp = Path(tempfile.mkdtemp())
    app = create_app(Settings(instance_dir=tmp, secret_key="x" * 32, storage_dir=tmp / "s", embedded_worker=False),
                     start_worker=False)
    doc = app.test_client().get("/api/v1/openapi.json").get_json()
    openapi_spec_validator.validate(doc)
    operations = [op for ops in doc["paths"].values() for method, op in ops.items() if method != "parameters"]
    assert len(operations) >= 10
    for operation in operations:
        answer = operation["responses"]["503"]
        assert "Retry-After" in answer["headers"]
        assert answer["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    app.extensions["dsr"].runtime.close()

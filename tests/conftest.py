"""Fixture chain: backend -> settings -> app -> client / run_jobs / token.

Every test that asks for ``backend`` runs twice when the real services are configured
(DSR_TEST_DATABASE_URL, DSR_TEST_REDIS_URL): once on the embedded default (SQLite + in-process
Redis) and once on PostgreSQL + Redis. With DSR_TEST_REQUIRE_SERVICES=1 (CI) an unreachable
service fails the run instead of skipping.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, create_engine, delete, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from dsr.config import DEFAULT_DATAMAP, Settings
from dsr.db import make_engine, make_session_factory
from dsr.demo import analytics, blobs, logs, portal
from dsr.domain.accounts import create_api_token
from dsr.domain.audit import GENESIS, HEAD_ID
from dsr.migrate import upgrade
from dsr.models import AuditHead, Base, Role
from dsr.queue import DsrSimpleWorker, purge_queue
from dsr.web.app import create_app
from tests.helpers import without_processor

PG_URL = os.environ.get("DSR_TEST_DATABASE_URL")
REDIS_URL = os.environ.get("DSR_TEST_REDIS_URL")
REQUIRE = os.environ.get("DSR_TEST_REQUIRE_SERVICES") == "1"
SECRET = "test-secret-" + "x" * 32


@dataclass(frozen=True)
class Backend:
    name: str
    database_url: str
    store_url: str
    redis_url: str | None
    media: Path

    @property
    def analytics(self) -> Path:
        """The analytics store's daily exports (built from the store's consents)."""
        return self.media.parent / f"{self.media.name}-analytics"

    @property
    def real(self) -> bool:
        return self.name == "services"


def pytest_configure(config: pytest.Config) -> None:
    if REQUIRE and not (PG_URL and REDIS_URL):
        raise pytest.UsageError("DSR_TEST_REQUIRE_SERVICES=1 needs DSR_TEST_DATABASE_URL and DSR_TEST_REDIS_URL")


def pytest_report_header() -> str:
    return f"dsr backends: embedded{' + services (PostgreSQL ' + _safe(PG_URL) + ', Redis)' if PG_URL else ''}"


def _safe(url: str | None) -> str:
    return make_url(url).render_as_string(hide_password=True) if url else ""


BACKENDS = ["embedded", *(["services"] if PG_URL and REDIS_URL else [])]


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    if request.param == "embedded":
        root = tmp_path_factory.mktemp("embedded")
        b = Backend("embedded", f"sqlite:///{root / 'dsr.sqlite'}", f"sqlite:///{root / 'portal.sqlite'}", None,
                    root / "media")
        _prepare(b, b.media)
        yield b
        return
    assert PG_URL and REDIS_URL
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
        admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        pytest.fail(f"the real services are configured but unreachable: {exc}")  # fail, never skip
    name = f"dsr_test_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}_store"'))
    base = make_url(PG_URL)
    b = Backend("services", base.set(database=name).render_as_string(False),
                base.set(database=f"{name}_store").render_as_string(False), REDIS_URL,
                tmp_path_factory.mktemp("services-media"))
    try:
        _prepare(b, b.media)
        yield b
    finally:
        with admin.connect() as conn:
            for db in (name, f"{name}_store"):
                conn.execute(text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        admin.dispose()


def _prepare(b: Backend, media: Path) -> None:
    upgrade(b.database_url)
    engine = make_engine(b.store_url)
    portal.build(engine, portal.DemoSize(subjects=12, rows=30))
    blobs.build(engine, media)
    analytics.build(b.analytics, analytics.consent_windows(engine))
    engine.dispose()


@pytest.fixture(scope="session")
def test_datamap(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default data map without the processor store (see tests.helpers.without_processor)."""
    path = tmp_path_factory.mktemp("datamap") / "datamap.yaml"
    raw = without_processor(yaml.safe_load(DEFAULT_DATAMAP.read_text(encoding="utf-8")))
    path.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def clean_db(backend: Backend) -> Iterator[None]:
    """Each test starts from the migrated, empty schema (rows deleted, chain head reset)."""
    engine = make_engine(backend.database_url)
    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(delete(table))
        conn.execute(AuditHead.__table__.insert().values(id=HEAD_ID, seq=0, hash=GENESIS))
    engine.dispose()
    yield


@pytest.fixture
def settings(backend: Backend, clean_db: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
             test_datamap: Path) -> Settings:
    monkeypatch.setenv("DSR_PORTAL_DB_URL", backend.store_url)
    monkeypatch.setenv("DSR_MEDIA_DIR", str(backend.media))
    monkeypatch.setenv("DSR_ANALYTICS_DIR", str(backend.analytics))
    logs.build(tmp_path / "instance" / "logs", lines=200)
    return Settings(
        instance_dir=tmp_path / "instance",
        database_url=backend.database_url,
        redis_url=backend.redis_url,
        secret_key=SECRET,
        datamap_path=test_datamap,
        storage_dir=tmp_path / "storage",
        queue_name=f"dsr-test-{uuid.uuid4().hex[:8]}",
        embedded_worker=False,
        retry_intervals=(),
    )


@dataclass(frozen=True)
class OwnStores:
    store_url: str
    media: Path
    analytics: Path


@pytest.fixture
def own_stores(backend: Backend, settings: Settings, tmp_path: Path,
               monkeypatch: pytest.MonkeyPatch) -> Iterator[OwnStores]:
    """A demo portal database, media folder and analytics exports of this test's own (the session's
    are shared and must stay as built): for tests that erase. Apps built after this use them."""
    media, exports = tmp_path / "own-media", tmp_path / "own-analytics"
    if backend.real:
        admin = create_engine(backend.store_url, isolation_level="AUTOCOMMIT")
        name = f"dsr_own_{uuid.uuid4().hex[:10]}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = make_url(backend.store_url).set(database=name).render_as_string(False)
    else:
        url = f"sqlite:///{tmp_path / 'own-portal.sqlite'}"
    try:
        engine = make_engine(url, create_folder=True)
        portal.build(engine, portal.DemoSize(subjects=12, rows=30))
        blobs.build(engine, media)
        analytics.build(exports, analytics.consent_windows(engine))
        engine.dispose()
        monkeypatch.setenv("DSR_PORTAL_DB_URL", url)
        monkeypatch.setenv("DSR_MEDIA_DIR", str(media))
        monkeypatch.setenv("DSR_ANALYTICS_DIR", str(exports))
        yield OwnStores(url, media, exports)
    finally:
        if backend.real:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


@pytest.fixture
def make_app(settings: Settings) -> Iterator[Callable[..., Flask]]:
    """Apps on the test's backend with some settings changed (``make_app(datamap_path=...)``); each
    is torn down after the test: worker stopped, its queue purged from Redis, connections closed."""
    apps: list[Flask] = []

    def build(*, start_worker: bool | None = None, **overrides: Any) -> Flask:
        app = create_app(replace(settings, **overrides), start_worker=start_worker)
        app.config["TESTING"] = True
        apps.append(app)
        return app

    yield build
    for app in apps:
        context = app.extensions["dsr"]
        if context.worker:
            context.worker.stop()
        if context.sweeper:
            context.sweeper.stop()
        if settings.redis_url:
            purge_queue(context.queue)
        context.runtime.close()


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def engine(backend: Backend, clean_db: None) -> Iterator[Engine]:
    """A plain engine on the test's metadata database (for tests below the app)."""
    engine = make_engine(backend.database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def token(app: Flask) -> str:
    with app.extensions["dsr"].runtime.sessions.begin() as session:
        _row, secret = create_api_token(session, name="tests", role=Role.DPO)
    return secret


@pytest.fixture
def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def run_jobs(app: Flask):  # type: ignore[no-untyped-def]
    """Run every queued job (and those they enqueue) in this thread, then return."""
    context = app.extensions["dsr"]

    def run(max_jobs: int | None = None) -> bool:
        worker = DsrSimpleWorker([context.queue], connection=context.queue.connection, runtime=context.runtime)
        return worker.work(burst=True, logging_level="WARNING", max_jobs=max_jobs)  # max_jobs: stop part-way

    return run

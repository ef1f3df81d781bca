"""Engine and session factory for the metadata database (SQLite embedded, PostgreSQL in production)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker


def make_engine(url: str, *, create_folder: bool = False, must_exist: bool = False, **kwargs: Any) -> Engine:
    """An engine with the settings each backend needs for several threads and processes at once.

    ``create_folder``: for our own SQLite files, make the folder. ``must_exist``: a store's SQLite
    file is opened read-write but never created, so a missing store is an error, not an empty store.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        connect_args: dict[str, Any] = {"check_same_thread": False, "timeout": 30}
        file = parsed.database if parsed.database and parsed.database != ":memory:" else None
        if create_folder and file:
            Path(file).resolve().parent.mkdir(parents=True, exist_ok=True)
        if must_exist and file:
            uri = f"file:{quote(str(Path(file).resolve()))}?mode=rw"
            kwargs["creator"] = lambda: sqlite3.connect(uri, uri=True, **connect_args)
        engine = create_engine(url, connect_args=connect_args, **kwargs)
        _serialise_sqlite_writers(engine)
        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


def _serialise_sqlite_writers(engine: Engine) -> None:
    # pysqlite opens transactions lazily and as readers; two readers that both upgrade to writers
    # deadlock. BEGIN IMMEDIATE takes the write lock up front, and busy_timeout makes others wait.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)

"""503 while the database or the queue cannot be reached, instead of a 500.

A client that gets 503 with ``Retry-After`` knows to send again; nothing was half-written, because
every state change and the jobs it needs commit in one transaction (the outbox), or not at all.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any, ClassVar

import redis.exceptions
import sqlalchemy.exc
from apispec import BasePlugin
from flask import Flask, jsonify

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 10

# SQLite's words for a database it cannot reach now (a lock held too long, a file away), as opposed to
# a wrong schema or statement, which is a bug and stays a 500.
_SQLITE_AWAY = ("database is locked", "database table is locked", "unable to open database file", "disk i/o error")
# PostgreSQL SQLSTATEs of an unreachable or unwilling server: connection exceptions (class 08), shutting
# down or starting up (57P01-57P03), too many connections (53300).
_PG_AWAY = ("57P01", "57P02", "57P03", "53300")


def database_unreachable(exc: BaseException) -> bool:
    if isinstance(exc, sqlalchemy.exc.TimeoutError):  # no pooled connection came free in time
        return True
    if not isinstance(exc, sqlalchemy.exc.DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    original = exc.orig
    if isinstance(original, sqlite3.Error):
        return str(original).lower().startswith(_SQLITE_AWAY)
    state = getattr(original, "sqlstate", None)
    if state:
        return state.startswith("08") or state in _PG_AWAY
    # psycopg raises a failed connect as OperationalError without a SQLSTATE (refused, reset, timed out).
    return isinstance(exc, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError))


def install(app: Flask) -> None:
    def unavailable(part: str) -> Any:
        response = jsonify(code=503, status="Service Unavailable", message=(
            f"the {part} cannot be reached right now; nothing was changed. Try again in a few seconds."))
        response.status_code = 503
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response

    @app.errorhandler(sqlalchemy.exc.DBAPIError)
    @app.errorhandler(sqlalchemy.exc.TimeoutError)
    def _database(exc: Exception) -> Any:
        if not database_unreachable(exc):
            log.exception("database error", exc_info=exc)
            response = jsonify(code=500, status="Internal Server Error", message="an internal error occurred")
            response.status_code = 500
            return response
        log.warning("database unreachable: %s", exc.__class__.__name__)
        return unavailable("database")

    @app.errorhandler(redis.exceptions.ConnectionError)
    @app.errorhandler(redis.exceptions.TimeoutError)
    def _queue(exc: Exception) -> Any:
        log.warning("queue unreachable: %s", exc)
        return unavailable("queue")


class Documented(BasePlugin):
    """Declares the 503 in the OpenAPI document for every operation (each reads the database), so the
    contract names what a client must handle: send again after Retry-After seconds."""

    RESPONSE: ClassVar[dict[str, Any]] = {
        "description": "The database or the queue cannot be reached right now; nothing was changed",
        "headers": {"Retry-After": {"description": "Seconds to wait before sending again",
                                    "schema": {"type": "integer", "example": RETRY_AFTER_SECONDS}}},
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }

    def operation_helper(self, path: str | None = None, operations: dict[str, Any] | None = None,
                         **kwargs: Any) -> None:
        for operation in (operations or {}).values():
            if isinstance(operation, dict):
                operation.setdefault("responses", {}).setdefault("503", self.RESPONSE)

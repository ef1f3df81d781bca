"""Public case references such as ``DSR-2026-000042``: per year, gap-free, safe under concurrency."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from dsr.models import ReferenceCounter


def next_reference(session: Session, year: int) -> str:
    # One atomic upsert: concurrent intakes each get their own number (row lock on PostgreSQL,
    # the database write lock on SQLite), without a read-then-write race.
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    upsert = insert(ReferenceCounter).values(year=year, value=1).on_conflict_do_update(
        index_elements=[ReferenceCounter.year], set_={"value": ReferenceCounter.value + 1}
    )
    value = session.execute(upsert.returning(ReferenceCounter.value)).scalar_one()
    return f"DSR-{year}-{value:06d}"


def current_value(session: Session, year: int) -> int:
    return session.execute(select(ReferenceCounter.value).where(ReferenceCounter.year == year)).scalar() or 0

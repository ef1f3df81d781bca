"""Public case references such as ``DSR-2026-000042``: per year, gap-free, safe under concurrency."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    CTE,
    ColumnElement,
    FromClause,
    Integer,
    String,
    Text,
    bindparam,
    case,
    cast,
    func,
    literal,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from dsr.models import ReferenceCounter


def next_reference(session: Session, year: int) -> str:
    # One atomic upsert: concurrent intakes each get their own number (row lock on PostgreSQL,
    # the database write lock on SQLite), without a read-then-write race. Intake on PostgreSQL
    # counts inside its one statement instead (``counted``), locking the audit head first: a
    # caller that takes this counter and then the head could deadlock with it.
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    upsert = insert(ReferenceCounter).values(year=year, value=1).on_conflict_do_update(
        index_elements=[ReferenceCounter.year], set_={"value": ReferenceCounter.value + 1}
    )
    value = session.execute(upsert.returning(ReferenceCounter.value)).scalar_one()
    return reference(year, value)


def reference(year: int, value: int) -> str:
    return f"DSR-{year}-{value:06d}"


def counted(after: FromClause) -> CTE:
    """PostgreSQL: the same upsert as a CTE of a larger statement, run once per row of ``after``
    (so nothing is counted when ``after`` is empty); it returns ``value``. Parameters: ``counted_values``."""
    year = bindparam("reference_year", type_=Integer)
    upsert = postgresql.insert(ReferenceCounter).from_select(
        ["year", "value"], select(year, literal(1, Integer)).select_from(after)
    ).on_conflict_do_update(index_elements=[ReferenceCounter.year], set_={"value": ReferenceCounter.value + 1})
    return upsert.returning(ReferenceCounter.value).cte("counter")


def reference_of(value: ColumnElement[int]) -> ColumnElement[str]:
    """``reference`` in SQL: at least six digits, more past 999,999 (as Python's ``:06d``)."""
    digits = cast(value, Text)
    return func.concat(bindparam("reference_prefix", type_=String),
                       case((value < 1_000_000, func.lpad(digits, 6, "0")), else_=digits))


def counted_values(year: int) -> dict[str, Any]:
    return {"reference_year": year, "reference_prefix": reference(year, 0).removesuffix("000000")}


def current_value(session: Session, year: int) -> int:
    return session.execute(select(ReferenceCounter.value).where(ReferenceCounter.year == year)).scalar() or 0

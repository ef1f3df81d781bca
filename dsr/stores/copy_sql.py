"""PostgreSQL's COPY (SELECT ...) TO STDOUT as the export path of SQL stores.

The disclosure rules of the data map (mask, omit) and the CSV conventions of
``dsr.exports.csv_files.cell`` (ISO 8601 times in UTC with microseconds, true/false, formula
neutralising) are written as SQL expressions, so the server formats the file and Python only
moves bytes. Both paths produce the same CSV for the same rows (tests compare them).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Boolean, Date, DateTime, Enum, String, Table, Text, case, cast, func, literal, or_
from sqlalchemy.sql.elements import ColumnElement

from dsr.datamap.model import FieldRule

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def usable(conn: Any, sink: Any, table: Table) -> bool:
    """COPY needs PostgreSQL through psycopg, a sink that takes raw CSV, and SQL for every mask used."""
    if conn.dialect.name != "postgresql" or conn.dialect.driver != "psycopg":
        return False
    if not (getattr(sink, "accepts_raw_csv", False) and hasattr(sink, "plan")):
        return False
    return all(r.disclose != "mask" or r.mask in _MASKS for r in sink.plan(table.name, [c.name for c in table.columns]))


def _text(column: Any) -> ColumnElement[Any]:
    return column if isinstance(column.type, String | Text | Enum) else cast(column, Text)


def _neutralised(value: ColumnElement[Any]) -> ColumnElement[Any]:
    # A leading = + - @ tab or CR would make a spreadsheet run the cell as a formula.
    return case((func.left(value, 1).in_(_FORMULA_START), func.concat("'", value)), else_=value)


def _last3(value: ColumnElement[Any]) -> ColumnElement[Any]:
    # Every digit followed by at most two more digits: the last three, whatever stands between them.
    return func.regexp_replace(value, r"[0-9](?=([^0-9]*[0-9]){0,2}[^0-9]*$)", "x", "g")


def _keep_last4(value: ColumnElement[Any]) -> ColumnElement[Any]:
    length = func.length(value)
    return case((length > 4, func.concat(func.repeat("*", length - 4), func.right(value, 4))),
                else_=func.repeat("*", length))


def _constant(text: str):  # type: ignore[no-untyped-def]
    return lambda value: case((or_(value.is_(None), value == ""), value), else_=literal(text))


_MASKS = {"last3": _last3, "keep_last4": _keep_last4, "withheld": _constant("withheld"),
          "redact": _constant("[redacted]")}


def expression(column: Any, rule: FieldRule) -> ColumnElement[Any]:
    """The SQL that yields what the CSV cell of this column must hold."""
    kind = column.type
    if rule.disclose == "mask" and rule.mask:
        return _neutralised(_MASKS[rule.mask](_text(column)))
    if isinstance(kind, DateTime):
        fmt = 'YYYY-MM-DD"T"HH24:MI:SS.US'
        if kind.timezone:
            return func.to_char(func.timezone("UTC", column), fmt + '"+00:00"')
        return func.to_char(column, fmt)
    if isinstance(kind, Date):
        return func.to_char(column, "YYYY-MM-DD")
    if isinstance(kind, Boolean):
        return case((column.is_(True), "true"), (column.is_(False), "false"), else_=None)
    if isinstance(kind, String | Text | Enum):
        return _neutralised(column)
    return column  # numbers: the server's text form is the plain decimal


def copy_to(conn: Any, stmt: Any, stream: Any) -> int:
    """Run ``COPY (stmt) TO STDOUT (FORMAT csv, HEADER)`` and write what arrives to ``stream``."""
    compiled = stmt.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    sql = f"COPY ({compiled}) TO STDOUT (FORMAT csv, HEADER)"
    raw = conn.connection.driver_connection  # psycopg.Connection
    with raw.cursor() as cursor:
        with cursor.copy(sql, compiled.params) as copy:
            for chunk in copy:
                stream.write(chunk)
        return int(cursor.rowcount)

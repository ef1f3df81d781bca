"""PostgreSQL's COPY (SELECT ...) TO STDOUT as the export path of SQL stores.

The disclosure rules of the data map (mask, omit) and the CSV conventions of
``dsr.exports.csv_files.cell`` (ISO 8601 times in UTC with microseconds, true/false, formula
neutralising) are written as SQL expressions, so the server formats the file and Python only
moves bytes. Both paths produce the same CSV for the same rows (tests compare them).
"""

from __future__ import annotations

import select
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from psycopg import pq
from sqlalchemy import (
    Boolean,
    Date,
    DateTime,
    Enum,
    String,
    Table,
    Text,
    and_,
    case,
    cast,
    false,
    func,
    literal,
    not_,
    null,
    or_,
    true,
)
from sqlalchemy import select as sql_select
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.sql.elements import ColumnElement

from dsr.datamap.model import Case, FieldRule
from dsr.exports.disclosure import NAME_REMOVED, as_text, outcome_key

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_FORMULA_CODES = [ord(c) for c in _FORMULA_START]
_COPY_BUFFER = 1 << 20  # bytes handed to the stream at once (COPY delivers one row per chunk)


def usable(conn: Any, sink: Any, table: Table | None) -> bool:
    """COPY needs PostgreSQL through psycopg (``conn``: a connection or engine), a sink that takes raw
    CSV, and SQL for every mask used (``table`` None: any table's masks)."""
    if conn.dialect.name != "postgresql" or conn.dialect.driver != "psycopg":
        return False
    if not (getattr(sink, "accepts_raw_csv", False) and hasattr(sink, "plan")):
        return False
    if table is None:
        return True
    return all(r.disclose != "mask" or r.mask in _MASKS or r.mask == "names"
               for r in sink.plan(table.name, [c.name for c in table.columns]))


def _text(column: Any) -> ColumnElement[Any]:
    return column if isinstance(column.type, String | Text | Enum) else cast(column, Text)


def _neutralised(value: ColumnElement[Any], test: ColumnElement[Any] | None = None) -> ColumnElement[Any]:
    # A leading = + - @ tab or CR would make a spreadsheet run the cell as a formula. ascii() of the
    # first character against integers: far cheaper than left(value, 1) IN (<six strings>).
    # Where it matches the value is not NULL, so || (cheaper than the variadic concat()) is safe.
    first = func.ascii(value if test is None else test)
    return case((first.in_(_FORMULA_CODES), literal("'", Text) + value), else_=value)


def _last3(value: ColumnElement[Any]) -> ColumnElement[Any]:
    # Every digit followed by at most two more digits: the last three, whatever stands between them.
    # Phone numbers end in three digits: cut and append, no regular expression (the look-ahead one
    # costs ~5 us a value). Anything else takes the general expression.
    general = func.regexp_replace(value, r"[0-9](?=([^0-9]*[0-9]){0,2}[^0-9]*$)", "x", "g")
    ends_in_digits = (func.length(value) >= 3) & (func.translate(func.right(value, 3), "0123456789", "") == "")
    return case((ends_in_digits, func.left(value, -3) + literal("xxx", Text)), else_=general)


def _keep_last4(value: ColumnElement[Any]) -> ColumnElement[Any]:
    length = func.length(value)
    return case((length > 4, func.concat(func.repeat("*", length - 4), func.right(value, 4))),
                else_=func.repeat("*", length))


def _constant(text: str):  # type: ignore[no-untyped-def]
    return lambda value: case((or_(value.is_(None), value == ""), value), else_=literal(text))


_MASKS = {"last3": _last3, "keep_last4": _keep_last4, "withheld": _constant("withheld"),
          "redact": _constant("[redacted]")}
# Masks whose result never starts with a formula character ('*', a constant, or ''): not neutralised.
_NEVER_FORMULA = {"keep_last4", "withheld", "redact"}


# A letter, digit or _ beside a name means it is part of a longer word (Python's \w in disclosure.py).
_WORD = "[[:alnum:]_]"


def _names(value: ColumnElement[Any], source: Any) -> ColumnElement[Any]:
    """``dsr.exports.disclosure.names_mask`` in SQL: the names in ``source`` (a column of the store)
    cut out of ``value``. One alternation of every name, longest first, every character but
    letters, digits and spaces escaped; a scalar sub-select, so the server builds it once."""
    name = func.btrim(cast(source, Text))
    escaped = func.regexp_replace(name, r"([^[:alnum:][:space:]])", r"\\\1", "g")
    words = (sql_select(func.string_agg(escaped, aggregate_order_by(literal("|", Text), func.length(name).desc(),
                                                                 name)))
             .where(name != "").scalar_subquery())
    pattern = literal(f"(?<!{_WORD})(?:", Text) + words + literal(f")s?(?!{_WORD})", Text)
    return case((words.is_(None), value), else_=func.regexp_replace(value, pattern, NAME_REMOVED, "gi"))


def _empty_as_null(value: ColumnElement[Any]) -> ColumnElement[Any]:
    # COPY writes an empty string as "" and NULL as nothing; the row path writes both as nothing.
    return func.nullif(value, "")


def expression(column: Any, rule: FieldRule, table: Table | None = None,
               options: dict[str, Any] | None = None, zone: str = "UTC") -> ColumnElement[Any]:
    """The SQL that yields what the CSV cell of this column must hold (per-record cases included).
    ``zone``: where the store's times without a zone are (the store's ``timezone``)."""
    if rule.disclose == "mask" and rule.mask == "names":
        if table is None or rule.names_from is None:
            raise ValueError(f"mask: names of {rule.name} needs its table and names_from")
        names_table, _, names_column = rule.names_from.partition(".")
        # Cutting a name never puts a formula character first (the mark starts with "["), so the
        # stored value decides the formula guard, and the mask is evaluated once.
        source = table.metadata.tables[names_table].c[names_column]
        return _empty_as_null(_neutralised(_names(_text(column), source),
                                           test=_text(column)))
    cases = [c for c in rule.cases if c.applies(options or {})] if table is not None else []
    if not cases:
        return _plain(column, rule, zone)
    whens = []
    for rule_case in cases:
        action = FieldRule(rule.name, rule.category, rule_case.disclose, rule_case.mask)
        result = null() if rule_case.disclose == "omit" else _plain(column, action, zone)
        whens.append((_condition(table, rule_case), result))  # type: ignore[arg-type]
    default = null() if rule.disclose == "omit" else _plain(column, rule, zone)
    return case(*whens, else_=default)


def _condition(table: Table, rule_case: Case) -> ColumnElement[bool]:
    """A case's condition on a record; NULL counts as not matching, as in CASE WHEN."""
    if rule_case.column is None:
        return true()
    other = table.c[rule_case.column]
    condition: ColumnElement[bool]
    if rule_case.values is not None:
        condition = cast(other, Text).in_(rule_case.values)
    elif isinstance(other.type, Boolean) and isinstance(rule_case.equals, bool):
        condition = other.is_(rule_case.equals)
    else:
        condition = cast(other, Text) == as_text(rule_case.equals)
    return func.coalesce(condition, false())


def outcome_counts(conn: Any, table: Table, rules: list[FieldRule], where: ColumnElement[bool],
                   options: dict[str, Any] | None = None) -> dict[str, dict[str, int]]:
    """Per field with cases, how many of the selected records each outcome decided (the first case
    that matches, else the field's own rule), keyed as ``dsr.exports.disclosure.outcome_key``: one
    aggregate query, as COPY cannot count them on the way."""
    columns: list[Any] = []
    keys: list[tuple[str, str]] = []
    for rule in rules:
        earlier: list[ColumnElement[bool]] = []
        for n, rule_case in enumerate(rule.cases):
            if not rule_case.applies(options or {}):
                continue
            condition = _condition(table, rule_case)
            columns.append(func.count().filter(and_(condition, *(not_(e) for e in earlier))))
            keys.append((rule.name, outcome_key(n)))
            earlier.append(condition)
        if rule.cases:
            columns.append(func.count().filter(and_(true(), *(not_(e) for e in earlier))))
            keys.append((rule.name, outcome_key(None)))
    if not columns:
        return {}
    row = conn.execute(sql_select(*columns).select_from(table).where(where)).one()
    out: dict[str, dict[str, int]] = {}
    for (field, key), count in zip(keys, row, strict=True):
        out.setdefault(field, {})[key] = int(count)
    return out


def _plain(column: Any, rule: FieldRule, zone: str = "UTC") -> ColumnElement[Any]:
    kind = column.type
    if rule.disclose == "mask" and rule.mask:
        masked = _MASKS[rule.mask](_text(column))
        if rule.mask in _NEVER_FORMULA:
            return _empty_as_null(masked)
        # last3 only turns digits into 'x': its result starts with a formula character exactly when
        # the stored value does, so test that and evaluate the mask once, not twice.
        return _empty_as_null(_neutralised(masked, test=_text(column)))
    if isinstance(kind, DateTime):
        # The server's own text form (DateStyle ISO, set in copy_to) with a T: about twice as fast as
        # to_char. Fractions of a second appear only when not zero, trailing zeros dropped; the row
        # path writes the same (dsr.exports.csv_files.iso_time). A time kept without a zone is in the
        # store's zone: as UTC it is written as it is, else converted (timezone(zone, t): the instant).
        if kind.timezone:
            utc = func.timezone("UTC", column)
        elif zone == "UTC":
            utc = column
        else:
            utc = func.timezone("UTC", func.timezone(zone, column))
        return func.replace(cast(utc, Text), " ", "T") + literal("+00:00", Text)
    if isinstance(kind, Date):
        return cast(column, Text)
    if isinstance(kind, Boolean):
        return case((column.is_(True), "true"), (column.is_(False), "false"), else_=None)
    if isinstance(kind, String | Text | Enum):
        return _empty_as_null(_neutralised(column))
    return column  # numbers: the server's text form is the plain decimal


def copy_to(conn: Any, stmt: Any, stream: Any) -> int:
    """Run ``COPY (stmt) TO STDOUT (FORMAT csv, HEADER)`` and write what arrives to ``stream``."""
    compiled = stmt.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    sql = f"COPY ({compiled}) TO STDOUT (FORMAT csv, HEADER)"
    raw = conn.connection.driver_connection  # psycopg.Connection
    with raw.cursor() as cursor:
        # Times and dates as ISO 8601 whatever the server's defaults are (the expressions rely on it).
        cursor.execute("SET DateStyle TO 'ISO, YMD'")
        cursor.execute("SET IntervalStyle TO 'iso_8601'")
        with cursor.copy(sql, compiled.params):
            return _drain(raw.pgconn, stream)


def _drain(pgconn: Any, stream: Any) -> int:
    """The rows of a COPY TO that psycopg started, straight from libpq: a row is one call, where
    psycopg's own ``Copy.read`` goes through a generator per row (half of the client's time)."""
    get, buffer = pgconn.get_copy_data, bytearray()
    while True:
        size, data = get(1)  # 1: do not block, so the wait below can be interrupted
        if size > 0:
            buffer += data  # gathered, so the stream is called per megabyte, not per row
            if len(buffer) >= _COPY_BUFFER:
                stream.write(buffer)
                buffer.clear()
        elif size == 0:
            select.select([pgconn.socket], [], [])
            pgconn.consume_input()
        else:
            break
    if buffer:
        stream.write(buffer)
    results = []
    while (result := pgconn.get_result()) is not None:
        results.append(result)
    if size == -2 or not results or results[-1].status != pq.ExecStatus.COMMAND_OK:
        if results:
            raise psycopg.errors.error_from_result(results[-1], encoding=pgconn._encoding)
        raise psycopg.OperationalError(pgconn.get_error_message().decode(errors="replace"))
    return int(results[-1].command_tuples or 0)


def older_than(conn: Any, column: Any, cutoff: datetime, where: ColumnElement[bool],
               zone: str = "UTC") -> tuple[int, datetime | None]:
    """How many selected records have ``column`` before ``cutoff``, and the oldest (a time kept without
    a zone is in the store's ``zone``)."""
    if not column.type.timezone:
        cutoff = cutoff.astimezone(ZoneInfo(zone)).replace(tzinfo=None)
    count, oldest = conn.execute(sql_select(func.count(), func.min(column)).where(where, column < cutoff)).one()
    if isinstance(oldest, datetime) and oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=ZoneInfo(zone))
    return int(count), oldest

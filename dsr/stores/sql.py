"""SQL stores reached through any SQLAlchemy URL.

The subject is found in the identity table(s); every other table is reached by following the
references of the data map (``invoice_lines.invoice_id -> invoices.id -> accounts.id``). Each
table's rows are selected by one statement whose membership test the database evaluates with
nested ``IN (SELECT ...)``, and streamed in batches through a server-side cursor.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from marshmallow import RAISE, Schema, ValidationError, fields, validates_schema
from sqlalchemy import (
    Boolean,
    ColumnElement,
    Date,
    DateTime,
    Engine,
    Float,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    and_,
    cast,
    delete,
    exists,
    false,
    func,
    inspect,
    not_,
    or_,
    select,
    true,
    update,
)
from sqlalchemy import column as column_clause
from sqlalchemy import table as table_clause
from sqlalchemy.exc import IntegrityError, NoSuchTableError, OperationalError, SQLAlchemyError
from sqlalchemy.sql.expression import FromClause

from dsr.db import make_engine
from dsr.stores import copy_sql
from dsr.stores.base import (
    CollectResult,
    ColumnKind,
    Connector,
    ErasureCount,
    ErasureResult,
    Progress,
    StoreUnavailable,
    Subject,
    TableErasure,
    TableSink,
    TooMany,
    register,
)


class ErasurePlanError(ValueError):
    """The store cannot carry out an erasure plan as given (an unknown table or column, a NOT NULL column
    without a replacement, kept records that a foreign key ties to deleted ones): nothing was changed."""


class _Connection(Schema):
    class Meta:
        unknown = RAISE

    url = fields.String(required=True)
    batch_size = fields.Integer(load_default=5000)
    # The zone of times the store keeps without one (SQLite, MySQL DATETIME, PostgreSQL "timestamp"):
    # the export writes every time in UTC with its offset, so a reader never has to guess.
    timezone = fields.String(load_default="UTC")

    @validates_schema
    def _zone(self, data: dict[str, Any], **_: Any) -> None:
        try:
            ZoneInfo(data["timezone"])
        except (ZoneInfoNotFoundError, ValueError):
            raise ValidationError(f"{data['timezone']!r} is not a time zone name such as UTC or Europe/Berlin",
                                  "timezone") from None


class _Identity(Schema):
    class Meta:
        unknown = RAISE

    table = fields.String(required=True)
    column = fields.String(required=True)


class _TableOptions(Schema):
    class Meta:
        unknown = RAISE

    key = fields.String(load_default="id")
    # column in this table -> "other_table.column": how rows here belong to rows there. A list: the
    # row belongs to the subject through any of them (staff named by notes, flags and access logs).
    references = fields.Dict(keys=fields.String(), values=fields.Raw(), load_default=dict)

    @validates_schema
    def _targets(self, data: dict[str, Any], **_: Any) -> None:
        for _column, value in data["references"].items():
            targets = value if isinstance(value, list) and value else [value]
            for target in targets:
                if not isinstance(target, str) or target.count(".") != 1:
                    raise ValidationError(f"{target!r} must be written table.column (or a list of them)",
                                          "references")


# PostgreSQL COPY exports run on this many connections at once (one table each).
COPY_CONNECTIONS = 2


@register
class SqlConnector(Connector):
    type_name = "sql"
    connection_schema = _Connection
    identity_schema = _Identity
    table_schema = _TableOptions
    looks_up_names = True
    dates_records = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._engine: Engine | None = None
        self._tables: dict[str, Table] = {}
        self._foreign_keys: list[_ForeignKey] | None = None

    @classmethod
    def validate(cls, store: Any) -> list[tuple[str, str]]:
        problems = super().validate(store)
        if problems:
            return problems
        base = f"stores.{store.name}"
        refs = {name: _references(t.options) for name, t in store.tables.items()}
        for name, targets in refs.items():
            for column, other, _col in targets:
                if other not in store.tables:
                    problems.append((f"{base}.tables.{name}.references.{column}", f"unknown table {other!r}"))
        for kind, ident in store.identities.items():
            if ident["table"] not in store.tables:
                problems.append((f"{base}.identities.{kind}.table", f"unknown table {ident['table']!r}"))
        if problems:
            return problems
        roots = {ident["table"] for ident in store.identities.values()}
        if not roots:
            problems.append((f"{base}.identities", "names no way to find a subject (e.g. email: {table, column})"))
        for name in store.tables:
            problems += _reachable(base, name, refs, roots, ())
        return list(dict.fromkeys(problems))

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = make_engine(self.store.connection["url"], must_exist=True)
        return self._engine

    def _reflect(self) -> dict[str, Table]:
        if not self._tables:
            metadata = MetaData()
            try:
                metadata.reflect(self.engine, only=list(self.store.tables))
            except (NoSuchTableError, OperationalError) as exc:
                raise StoreUnavailable(f"store {self.store.name}: {exc.__class__.__name__}: {exc}") from exc
            except SQLAlchemyError as exc:  # e.g. InvalidRequestError for tables missing from `only`
                raise StoreUnavailable(f"store {self.store.name}: {exc}") from exc
            self._tables = dict(metadata.tables)
        return self._tables

    def check(self) -> list[str]:
        """Tables and columns the map names must exist; identity and reference columns should be indexed."""
        try:
            inspector = inspect(self.engine)
            existing = set(inspector.get_table_names())
        except SQLAlchemyError as exc:
            return [f"stores.{self.store.name}.connection.url: cannot connect: {exc.__class__.__name__}: {exc}"]
        problems: list[str] = []
        base = f"stores.{self.store.name}"
        for name, table in self.store.tables.items():
            if name not in existing:
                problems.append(f"{base}.tables.{name}: no such table in the store")
                continue
            columns = {c["name"] for c in inspector.get_columns(name)}
            indexed = {next(iter(i["column_names"])) for i in inspector.get_indexes(name) if i["column_names"]}
            pk = inspector.get_pk_constraint(name).get("constrained_columns") or []
            indexed.update(pk[:1])
            indexed.update(u["column_names"][0] for u in inspector.get_unique_constraints(name) if u["column_names"])
            needed = [(f"{base}.tables.{name}.fields.{c}", c) for c in table.fields]
            needed += [(f"{base}.tables.{name}.fields.{c}.cases.{i}.when.column", case.column)
                       for c, rule in table.fields.items() for i, case in enumerate(rule.cases) if case.column]
            needed.append((f"{base}.tables.{name}.key", table.options.get("key", "id")))
            referring = dict.fromkeys(c for c, _o, _oc in _references(table.options))
            needed += [(f"{base}.tables.{name}.references.{c}", c) for c in referring]
            for path, column in needed:
                if column not in columns:
                    problems.append(f"{path}: no column {column!r} in table {name}")
            for column in referring:
                if column in columns and column not in indexed:
                    problems.append(f"warning: {base}.tables.{name}.references.{column}: no index on {name}.{column};"
                                    " finding a subject's rows will scan the table")
        for kind, ident in self.store.identities.items():
            table, column = ident["table"], ident["column"]
            if table in existing and column not in {c["name"] for c in inspector.get_columns(table)}:
                problems.append(f"{base}.identities.{kind}.column: no column {column!r} in table {table}")
        for name, table in self.store.tables.items():
            for field, rule in table.fields.items():
                source, _, column = (rule.names_from or "").partition(".")
                if source in existing and column not in {c["name"] for c in inspector.get_columns(source)}:
                    problems.append(f"{base}.tables.{name}.fields.{field}.names_from: no column {column!r} "
                                    f"in table {source}")
        return problems

    def names(self, source: str) -> list[str]:
        """Every distinct non-empty value of ``table.column`` (the staff names a note is cleaned of)."""
        table, _, column = source.partition(".")
        t = self._reflect()[table]
        value = func.trim(cast(t.c[column], String))
        try:
            with self.engine.connect() as conn:
                return [str(v) for v in conn.execute(select(value).where(value != "").distinct()).scalars()]
        except OperationalError as exc:
            raise StoreUnavailable(f"store {self.store.name}: {exc.orig or exc}") from exc

    def resolve(self, subject: Subject) -> dict[str, str]:
        """Identities kept in the same row as a known one: the account found by e-mail gives its
        customer number and phone. Only identity types the subject lacks are added."""
        tables = self._reflect()
        found: dict[str, str] = {}
        by_table: dict[str, dict[str, str]] = {}
        for kind, ident in self.store.identities.items():
            by_table.setdefault(ident["table"], {})[kind] = ident["column"]
        try:
            with self.engine.connect() as conn:
                for table, kinds in by_table.items():
                    if not set(kinds) - set(subject.identities) - set(found):
                        continue
                    t = tables[table]
                    stmt = select(*(t.c[c].label(k) for k, c in kinds.items())).where(self.membership(table, subject))
                    row = conn.execute(stmt.order_by(self._order(table, t)).limit(1)).mappings().first()
                    if row is not None:
                        found.update({k: str(v) for k, v in row.items()
                                      if v is not None and k not in subject.identities and k not in found})
        except OperationalError as exc:
            self.close()
            raise StoreUnavailable(f"store {self.store.name}: {exc.orig or exc}") from exc
        if "email" in found:
            found["email"] = found["email"].lower()
        return found

    def membership(self, table: str, subject: Subject,
                   bounds: Mapping[str, ColumnElement[bool]] | None = None) -> ColumnElement[bool]:
        """The condition that a row of ``table`` belongs to the subject. ``bounds``: table -> a condition its
        rows must also meet (a dated erasure's ``before``); rows belonging through a bounded table's rows
        are then only those of the rows that meet it."""
        tables = self._reflect()
        t = tables[table]
        conditions: list[ColumnElement[bool]] = []
        for kind, ident in self.store.identities.items():
            if ident["table"] == table and kind in subject.identities:
                column = t.c[ident["column"]]
                # E-mail addresses are compared case-insensitively, or "Max@..." would be missed.
                left = func.lower(column) if kind == "email" else column
                conditions.append(left == subject.identities[kind])
        for column, other, other_column in _references(self.store.tables[table].options):
            o = tables[other]
            conditions.append(t.c[column].in_(select(o.c[other_column]).where(self.membership(other, subject,
                                                                                               bounds))))
        where = or_(*conditions) if conditions else false()
        return and_(where, bounds[table]) if bounds and table in bounds else where

    def collect(self, subject: Subject, sink: TableSink, progress: Progress | None = None) -> CollectResult:
        try:
            return self._collect(subject, sink, progress)
        except StoreUnavailable:
            self.close()  # the next attempt connects and reflects afresh: the store may be back by then
            raise

    def _collect(self, subject: Subject, sink: TableSink, progress: Progress | None) -> CollectResult:
        tables = self._reflect()
        sources = {r.names_from for t in self.store.tables.values() for r in t.fields.values() if r.names_from}
        if sources and hasattr(sink, "use_names"):
            if copy_sql.usable(self.engine, sink, None):
                sink.use_names(self.names)  # COPY cuts names in SQL: looked up only if a table takes the row path
            else:
                # The row-by-row path: read once, before the export holds a connection (SQLite would
                # take a second transaction for a lock).
                known = {source: self.names(source) for source in sources}
                sink.use_names(known.__getitem__)
        result = CollectResult()
        todo = []
        for name in self.store.tables:
            if progress is not None and progress.done(name):
                result.found[name] = progress.found(name)  # exported by an earlier attempt
            else:
                todo.append(name)
        try:
            if copy_sql.usable(self.engine, sink, None):
                self._collect_apart(subject, sink, progress, todo, result)
                return result
            with self.engine.connect() as conn:
                for name in todo:
                    where = self.membership(name, subject)
                    if copy_sql.usable(conn, sink, tables[name]):
                        result.found[name] = self._copy(conn, sink, name, tables[name], where)
                    else:
                        result.found[name] = self._stream(conn, sink, name, tables[name], where)
                    if progress is not None:
                        progress.complete(name, result.found[name])
        except OperationalError as exc:
            raise StoreUnavailable(f"store {self.store.name}: {exc.orig or exc}") from exc
        return result

    def _collect_apart(self, subject: Subject, sink: TableSink, progress: Progress | None, todo: list[str],
                       result: CollectResult) -> None:
        """PostgreSQL: ``COPY_CONNECTIONS`` tables at once, each on a connection of its own. While this
        process writes one table's rows, the server selects and sorts the next one's on another core.
        Tables are recorded as done in the data map's order; after a failure no further table starts."""
        tables = self._reflect()
        pool = ThreadPoolExecutor(COPY_CONNECTIONS, thread_name_prefix="dsr-copy")
        with pool:
            counted = {name: pool.submit(self._apart, sink, name, tables[name], self.membership(name, subject))
                       for name in todo}
            failed: BaseException | None = None
            for name, count in counted.items():
                try:
                    result.found[name] = count.result()
                except BaseException as exc:  # raised once the tables under way are settled
                    if failed is None:
                        failed = exc
                        pool.shutdown(wait=False, cancel_futures=True)
                    continue
                if progress is not None:
                    progress.complete(name, result.found[name])  # a retry need not read it again
            if failed is not None:
                raise failed

    def _apart(self, sink: Any, name: str, t: Table, where: ColumnElement[bool]) -> int:
        with self.engine.connect() as conn:
            if copy_sql.usable(conn, sink, t):
                return self._copy(conn, sink, name, t, where)
            return self._stream(conn, sink, name, t, where)

    @property
    def _stored_zone(self) -> str:
        """Where the times the store keeps without a zone are (connection option ``timezone``)."""
        return str(self.store.connection.get("timezone", "UTC"))

    def _order(self, name: str, t: Table) -> Any:
        return t.c[self.store.tables[name].options.get("key", "id")]

    def _stream(self, conn: Any, sink: TableSink, name: str, t: Table, where: ColumnElement[bool]) -> int:
        """Row by row through a server-side cursor, in batches: any SQLAlchemy database."""
        batch = int(self.store.connection.get("batch_size", 5000))
        rows = conn.execution_options(yield_per=batch).execute(select(t).where(where).order_by(self._order(name, t)))
        writer = sink.open_table(name, list(rows.keys()), [column_kind(c.type) for c in t.columns])
        times = [i for i, c in enumerate(t.columns) if isinstance(c.type, DateTime)]
        zone = ZoneInfo(self._stored_zone)
        count = 0
        for part in rows.partitions():
            writer.write([_zoned(row, times, zone) for row in part] if times else part)
            count += len(part)
        writer.close()
        return count

    def _copy(self, conn: Any, sink: Any, name: str, t: Table, where: ColumnElement[bool]) -> int:
        """PostgreSQL: selection, disclosure rules and CSV formatting all happen in one COPY (SELECT ...),
        streamed to the file as the server sends it (the floor: about 5x faster than row by row)."""
        rules = sink.plan(name, [c.name for c in t.columns])
        if not rules:  # nothing of this table is in the answer's scope (e.g. portability)
            return 0
        options = getattr(sink, "options", {})
        zone = self._stored_zone
        stmt = select(*(copy_sql.expression(t.c[r.name], r, t, options, zone).label(r.name) for r in rules))
        stmt = stmt.where(where).order_by(self._order(name, t))
        stream = sink.open_csv(name, [c.name for c in t.columns], [column_kind(c.type) for c in t.columns])
        try:
            rows = copy_sql.copy_to(conn, stmt, stream)
        finally:
            stream.close(rows if "rows" in locals() else 0)
        for field, outcomes in copy_sql.outcome_counts(conn, t, [r for r in rules if r.cases], where,
                                                       options).items():
            sink.count_outcomes(name, field, outcomes)
        limit = sink.limit(name) if hasattr(sink, "limit") else None
        if limit is not None and limit.column in t.c:
            sink.count_aged(name, *copy_sql.older_than(conn, t.c[limit.column], limit.cutoff, where,
                                                      self._stored_zone))
        return rows

    def values(self, subject: Subject, table: str, column: str) -> list[Any]:
        try:
            t = self._reflect()[table]
            with self.engine.connect() as conn:
                return list(conn.execute(select(t.c[column]).where(self.membership(table, subject)).distinct())
                            .scalars())
        except OperationalError as exc:
            self.close()
            raise StoreUnavailable(f"store {self.store.name}: {exc.orig or exc}") from exc

    def identity_values(self, kind: str) -> Iterator[str]:
        ident = self.store.identities.get(kind)
        if ident is None:
            return
        try:
            column = self._reflect()[ident["table"]].c[ident["column"]]
            with self.engine.connect() as conn:
                rows = conn.execution_options(stream_results=True, yield_per=5000).execute(
                    select(column).where(column.is_not(None)).distinct())
                for value in rows.scalars():
                    yield str(value)
        except OperationalError as exc:
            self.close()
            raise StoreUnavailable(f"store {self.store.name}: {exc.orig or exc}") from exc

    # --- the retention register ---------------------------------------------------------------
    def retained(self, subject: Subject, table: str, column: str) -> list[tuple[date | None, int]]:
        """The subject's records of ``table`` per day of ``column`` in the store's zone: one GROUP BY."""
        try:
            t = self._reflect()[table]
            if column not in t.c:
                raise ErasurePlanError(f"store {self.store.name}: table {table} has no column {column!r}")
            days = select(self._day(t.c[column]).label("day")).where(self.membership(table, subject)).subquery()
            stmt = select(days.c.day, func.count()).group_by(days.c.day)
            with self.engine.connect() as conn:
                rows = conn.execute(stmt).all()
        except OperationalError as exc:
            self.close()
            raise StoreUnavailable(f"store {self.store.name}: {exc.orig or exc}") from exc
        counted = [(_as_day(day), int(n)) for day, n in rows]
        return sorted(counted, key=lambda r: (r[0] is None, r[0] or date.min))

    def parts_of(self, table: str) -> list[str]:
        """Tables every reference of which leads to ``table`` (directly, or through such tables)."""
        refs = {name: {other for _c, other, _oc in _references(t.options)} for name, t in self.store.tables.items()}
        roots = {ident["table"] for ident in self.store.identities.values()}
        parts: list[str] = []
        grown = True
        while grown:
            grown = False
            for name, targets in refs.items():
                if name != table and name not in parts and name not in roots and targets \
                        and targets <= {table, *parts}:
                    parts.append(name)
                    grown = True
        return parts

    def _day(self, column: Any) -> ColumnElement[Any]:
        """A date or time column's day in the store's zone. SQLite keeps times as text in the store's zone
        (``date()`` reads its ISO forms); PostgreSQL converts a time with zone into the store's zone."""
        dialect = self.engine.dialect.name
        if dialect == "sqlite":
            return func.date(column)
        if isinstance(column.type, DateTime) and getattr(column.type, "timezone", False) and dialect == "postgresql":
            return cast(func.timezone(self._stored_zone, column), Date)
        if isinstance(column.type, Date) and not isinstance(column.type, DateTime):
            return column
        return cast(column, Date)

    def _before(self, table: str, t: Table, bound: tuple[str, date]) -> ColumnElement[bool]:
        """The rows whose day of the column is before the day (a row without a date never is)."""
        name, day = bound
        column = t.c[name]
        if self.engine.dialect.name == "sqlite":
            return func.date(column) < day.isoformat()  # the same reading as ``retained``
        if isinstance(column.type, DateTime):
            start = datetime.combine(day, time())
            if getattr(column.type, "timezone", False):
                return column < start.replace(tzinfo=ZoneInfo(self._stored_zone))
            return column < start
        if isinstance(column.type, Date):
            return column < day
        raise ErasurePlanError(f"store {self.store.name}: table {table}: column {name} holds no date or time "
                               f"({column.type}); it cannot bound an erasure")

    # --- erasure -------------------------------------------------------------------------------
    def preview(self, subject: Subject, plan: Mapping[str, TableErasure]) -> ErasureResult:
        return self._erasure(subject, plan, bound=None, apply=False)

    def erase(self, subject: Subject, plan: Mapping[str, TableErasure], *, bound: int | None = None) -> ErasureResult:
        return self._erasure(subject, plan, bound=bound, apply=True)

    def erasure_order(self) -> list[str]:
        """The store's tables, each before the tables it refers to (children before parents): a child's
        membership is a sub-select on its parent's rows, so the parent must still be as it was.

        The data map's ``references`` decide; the database's own foreign keys add edges where they do
        not contradict the map (``agent_notes.ticket_id -> support_tickets.id`` is a key the map does
        not use, but deleting the tickets first would violate it). Ties keep the map's order."""
        names = list(self.store.tables)
        before: dict[str, set[str]] = {n: set() for n in names}  # table -> tables it must precede
        for name in names:
            before[name].update(o for _c, o, _oc in _references(self.store.tables[name].options) if o != name)
        for fk in self._foreign_key_list():
            if fk.child in before and fk.parent in before and fk.child != fk.parent \
                    and not _precedes(before, fk.parent, fk.child):
                before[fk.child].add(fk.parent)
        waiting = {n: sum(n in before[m] for m in names) for n in names}  # how many must come first
        order: list[str] = []
        ready = [n for n in names if not waiting[n]]
        while ready:
            name = ready.pop(0)
            order.append(name)
            for other in sorted(before[name], key=names.index):
                waiting[other] -= 1
                if not waiting[other]:
                    ready.append(other)
            ready.sort(key=names.index)
        return order  # complete: validate() refuses cycles among references, FK edges never make one

    def _erasure(self, subject: Subject, plan: Mapping[str, TableErasure], *, bound: int | None,
                 apply: bool) -> ErasureResult:
        try:
            tables = self._reflect()
            self._check_plan(plan, tables)
            order = [name for name in self.erasure_order() if name in plan]
            # One transaction for the whole store (SQLite: BEGIN IMMEDIATE, so no writer slips in between
            # counting and changing). A preview leaves it by rolling back.
            with self.engine.connect() as conn, conn.begin() as tx:
                result = self._erase_in(conn, subject, plan, order, tables, bound, apply)
                if apply:
                    tx.commit()
                else:
                    tx.rollback()
                return result
        except IntegrityError as exc:
            raise ErasurePlanError(f"store {self.store.name}: the erasure was rolled back, nothing changed: "
                                   f"{exc.orig or exc}") from exc
        except (OperationalError, StoreUnavailable) as exc:
            self.close()  # the next attempt connects and reflects afresh
            if isinstance(exc, StoreUnavailable):
                raise
            raise StoreUnavailable(f"store {self.store.name}: {exc.orig or exc}") from exc

    def _check_plan(self, plan: Mapping[str, TableErasure], tables: Mapping[str, Table]) -> None:
        """Refuse, before any statement, what would fail halfway: a NULL for a NOT NULL column fails
        only at the UPDATE, after other tables have changed (which the rollback would undo, but a clear
        message naming the column is worth more than the database's)."""
        for name, step in plan.items():
            if name not in self.store.tables:
                raise ErasurePlanError(f"store {self.store.name}: no table {name!r} in the data map")
            if step.method not in ("delete", "null", "retain"):
                raise ErasurePlanError(f"store {self.store.name}: table {name}: unknown method {step.method!r}")
            if step.before is not None and step.before[0] not in tables[name].c:
                raise ErasurePlanError(f"store {self.store.name}: table {name} has no column {step.before[0]!r}")
            if step.method != "null":
                continue
            if not step.fields:
                raise ErasurePlanError(f"store {self.store.name}: table {name}: null needs the fields it changes")
            t = tables[name]
            for col in (*step.fields, *step.replacements):
                if col not in t.c:
                    raise ErasurePlanError(f"store {self.store.name}: table {name} has no column {col!r}")
            for col in step.replacements:
                if col not in step.fields:
                    raise ErasurePlanError(f"store {self.store.name}: table {name}: a replacement for "
                                           f"{col!r}, which is not among the fields changed")
            for col in step.fields:
                if not t.c[col].nullable and step.replacements.get(col) is None:
                    raise ErasurePlanError(f"store {self.store.name}: table {name}: column {col} is NOT NULL; "
                                           "name a replacement value for it (erasure: replacements)")

    def _erase_in(self, conn: Any, subject: Subject, plan: Mapping[str, TableErasure], order: list[str],
                  tables: Mapping[str, Table], bound: int | None, apply: bool) -> ErasureResult:
        bounds = {name: self._before(name, tables[name], step.before) for name, step in plan.items()
                  if step.before is not None}
        wheres = {name: self.membership(name, subject, bounds) for name in order}
        # The counts come before any change (a parent's membership is intact). A preview counts every
        # table; an erasure counts only what it keeps or empties and takes the deleted records' count from
        # each DELETE: one statement per table. Past the bound, the store's transaction is rolled back.
        counts: dict[str, ErasureCount] = {}
        for name in order:
            step, t, where = plan[name], tables[name], wheres[name]
            if step.method == "delete" and apply:
                continue
            found = _count(conn, t, where)
            if step.method == "delete":
                counts[name] = ErasureCount(found=found, deleted=found)
            elif step.method == "null":
                counts[name] = ErasureCount(found=found, changed=_count(conn, t, and_(where, _differs(t, step))))
            else:
                counts[name] = ErasureCount(found=found, retained=found)
        waiting = self._check_kept_references(conn, plan, tables, wheres, apply)
        if not apply:
            return ErasureResult(counts, self._notes(plan, counts) + waiting)
        touched = sum(c.changed for c in counts.values())
        if bound is not None and touched > bound:
            raise TooMany(self.store.name, touched, bound)
        done = 0
        for name in order:
            step, t, where = plan[name], tables[name], wheres[name]
            if step.method == "delete":
                rows = conn.execute(delete(t).where(where)).rowcount
                counts[name] = ErasureCount(found=rows, deleted=rows)
            elif step.method == "null":
                values = {col: step.replacements.get(col) for col in step.fields}
                # Only records still holding a value: a second run changes (and counts) nothing.
                rows = conn.execute(update(t).where(and_(where, _differs(t, step))).values(values)).rowcount
                counts[name] = ErasureCount(found=counts[name].found, changed=rows)
            else:
                continue
            done += rows
            if bound is not None and done > bound:  # the caller's transaction is rolled back: nothing changed
                raise TooMany(self.store.name, done, bound)
        return ErasureResult({name: counts[name] for name in order}, self._notes(plan, counts) + waiting)

    def _check_kept_references(self, conn: Any, plan: Mapping[str, TableErasure], tables: Mapping[str, Table],
                               wheres: Mapping[str, ColumnElement[bool]], apply: bool) -> list[str]:
        """A record the erasure keeps must not refer (by a foreign key of the database) to a record it
        deletes: the DELETE would fail, or leave a dangling reference where the key is not enforced.
        Tables outside the data map count too (a files store's index of the subject's attachments). A
        preview only notes those: the store that holds them erases before this one (its own preview
        counts them), so by the time this store erases they are gone."""
        notes: list[str] = []
        # PostgreSQL enforces every declared key: an erasure (not a preview) leaves the refusal to it (the
        # DELETE fails, the transaction is rolled back, ErasurePlanError), one query less per key. Only a
        # CASCADE, which the database would carry out silently into kept records, is checked first.
        enforced = apply and self.engine.dialect.name == "postgresql"
        for fk in self._foreign_key_list():
            if fk.parent not in plan or plan[fk.parent].method != "delete" or fk.on_delete == "SET NULL":
                continue  # SET NULL: the database drops the kept record's link itself
            if enforced and fk.on_delete != "CASCADE":
                continue
            parent = tables[fk.parent]
            child: FromClause = tables[fk.child] if fk.child in tables else table_clause(
                fk.child, *(column_clause(c) for c in fk.columns))
            doomed = exists(select(1).select_from(parent).where(
                wheres[fk.parent], *(parent.c[pc] == child.c[cc] for cc, pc in zip(fk.columns, fk.referred,
                                                                                  strict=True))))
            step = plan.get(fk.child)
            if step is not None and (step.method == "delete" or (
                    step.method == "null" and set(fk.columns) <= set(step.fields))):
                resolved: ColumnElement[bool] = wheres[fk.child]
            else:
                resolved = false()
            kept = _count(conn, child, and_(doomed, not_(resolved)))
            if kept and fk.on_delete == "CASCADE":
                raise ErasurePlanError(
                    f"store {self.store.name}: deleting the subject's {fk.parent} records would delete {kept} "
                    f"record(s) of {fk.child} that this erasure keeps (ON DELETE CASCADE); nothing was changed")
            if kept and not apply and fk.child not in self.store.tables:
                notes.append(f"{self.store.name}: {kept} record(s) of {fk.child} (outside the data map) refer to "
                             f"the subject's {fk.parent} records; the store that holds them must erase them first")
            elif kept:
                columns = ", ".join(f"{fk.child}.{c}" for c in fk.columns)
                raise ErasurePlanError(
                    f"store {self.store.name}: {kept} record(s) of {fk.child} that this erasure keeps refer to "
                    f"the subject's {fk.parent} records it deletes ({columns}); erase or null those first "
                    f"(a table outside the data map: erase the store that holds it first); nothing was changed")
        return notes

    def _notes(self, plan: Mapping[str, TableErasure], counts: Mapping[str, ErasureCount]) -> list[str]:
        """Records kept whose way to the subject is deleted: a later search (the retention run) cannot
        find them through it any more."""
        notes = []
        for name, step in plan.items():
            if step.method == "delete" or not counts[name].found:
                continue
            for _column, other, _other_column in _references(self.store.tables[name].options):
                if other in plan and plan[other].method == "delete" and counts[other].found:
                    notes.append(f"{name}: {counts[name].found} record(s) kept, but the {other} records they "
                                 "belong to are deleted: they can no longer be found through them")
        return notes

    def _foreign_key_list(self) -> list[_ForeignKey]:
        """The database's single-schema foreign keys that point at a table of the data map."""
        if self._foreign_keys is None:
            try:
                found = inspect(self.engine).get_multi_foreign_keys()
            except SQLAlchemyError as exc:
                raise StoreUnavailable(f"store {self.store.name}: {exc}") from exc
            self._foreign_keys = [
                _ForeignKey(child, fk["referred_table"], tuple(fk["constrained_columns"]),
                            tuple(fk["referred_columns"]),
                            str((fk.get("options") or {}).get("ondelete") or "").upper() or None)
                for (_schema, child), keys in found.items() for fk in keys
                if fk["referred_table"] in self.store.tables and fk["referred_schema"] in (None, _schema)]
            if self.engine.dialect.name == "sqlite":
                self._foreign_keys = self._sqlite_on_delete(self._foreign_keys)
        return self._foreign_keys

    def _sqlite_on_delete(self, keys: list[_ForeignKey]) -> list[_ForeignKey]:
        """SQLAlchemy does not reflect SQLite's ON DELETE of an inline REFERENCES; the pragma has it."""
        actions: dict[tuple[str, tuple[str, ...]], str] = {}
        with self.engine.connect() as conn:
            for child in {k.child for k in keys}:
                rows = conn.exec_driver_sql(f'PRAGMA foreign_key_list("{child.replace(chr(34), chr(34) * 2)}")')
                grouped: dict[int, list[tuple[int, str, str]]] = {}
                for row in rows.mappings():
                    grouped.setdefault(row["id"], []).append((row["seq"], row["from"], row["on_delete"]))
                for parts in grouped.values():
                    parts.sort()
                    actions[(child, tuple(p[1] for p in parts))] = str(parts[0][2]).upper()
        return [replace(k, on_delete=k.on_delete or actions.get((k.child, k.columns))) for k in keys]

    def warm(self) -> None:
        """Reflect the store's tables now and close the connections (a worker does this before it forks
        its work horses, which then start with the tables known). Raises StoreUnavailable."""
        self._reflect()
        self.engine.dispose()

    def after_fork(self) -> None:
        """In a forked process: keep the reflected tables, never reuse the parent's connections."""
        if self._engine is not None:
            self._engine.dispose(close=False)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
        self._engine, self._tables, self._foreign_keys = None, {}, None


@dataclass(frozen=True)
class _ForeignKey:
    child: str
    parent: str
    columns: tuple[str, ...]
    referred: tuple[str, ...]
    on_delete: str | None = None  # SET NULL, CASCADE, ... as the database declares it


def _precedes(before: Mapping[str, set[str]], first: str, then: str) -> bool:
    """Whether ``first`` must already come before ``then`` (a path in the graph)."""
    seen, todo = set(), [first]
    while todo:
        name = todo.pop()
        if name == then:
            return True
        if name not in seen:
            seen.add(name)
            todo.extend(before.get(name, ()))
    return False


def _count(conn: Any, t: FromClause, where: ColumnElement[bool]) -> int:
    return int(conn.execute(select(func.count()).select_from(t).where(where)).scalar_one())


def _as_day(value: Any) -> date | None:
    """A day as the database returns it: a date, a datetime (a driver's DATE as TIMESTAMP), or ISO text."""
    if value is None or (isinstance(value, date) and not isinstance(value, datetime)):
        return value
    if isinstance(value, datetime):
        return value.date()
    return date.fromisoformat(str(value)[:10])


def _differs(t: Table, step: TableErasure) -> ColumnElement[bool]:
    """Records where a field does not hold its erased value yet (NULL, or the replacement)."""
    conditions = [t.c[col].is_not(None) if step.replacements.get(col) is None
                  else t.c[col].is_distinct_from(step.replacements[col]) for col in step.fields]
    return or_(*conditions) if conditions else true()


def column_kind(kind: Any) -> ColumnKind:
    """What a column of this SQL type holds in the JSON twin. NUMERIC/DECIMAL stay exact text."""
    if isinstance(kind, Boolean):
        return "boolean"
    if isinstance(kind, DateTime):
        return "date-time"
    if isinstance(kind, Date):
        return "date"
    if isinstance(kind, Integer):
        return "integer"
    if isinstance(kind, Float) or (isinstance(kind, Numeric) and not kind.asdecimal):
        return "number"
    if isinstance(kind, Numeric):
        return "decimal"
    return "string"


def _zoned(row: Sequence[Any], times: list[int], zone: ZoneInfo) -> Sequence[Any]:
    """The row with its times that came without a zone placed in the store's zone."""
    if not any(isinstance(row[i], datetime) and row[i].tzinfo is None for i in times):
        return row
    values = list(row)
    for i in times:
        if isinstance(values[i], datetime) and values[i].tzinfo is None:
            values[i] = values[i].replace(tzinfo=zone)
    return values


def _references(options: Any) -> list[tuple[str, str, str]]:
    """(column here, other table, its column) for each reference; a column may refer to several."""
    out = []
    for column, value in (options.get("references") or {}).items():
        for target in value if isinstance(value, list) else [value]:
            other, _, other_column = str(target).partition(".")
            out.append((column, other, other_column))
    return out


def _reachable(base: str, name: str, refs: dict[str, list[tuple[str, str, str]]], roots: set[str],
               seen: tuple[str, ...]) -> list[tuple[str, str]]:
    """Every table must lead to an identity table through its references, and no path may loop
    (the membership query nests one sub-select per reference: a loop would never end)."""
    if name in seen:
        return [(f"{base}.tables.{seen[0]}.references", "references form a cycle: " + " -> ".join((*seen, name)))]
    if name in roots and not refs[name]:
        return []
    if not refs[name]:
        return [(f"{base}.tables.{name}", "no reference leads to an identity table, so the subject's rows "
                 "in it cannot be found")]
    problems: list[tuple[str, str]] = []
    for _column, other, _other_column in refs[name]:
        problems += _reachable(base, other, refs, roots, (*seen, name))
    return problems

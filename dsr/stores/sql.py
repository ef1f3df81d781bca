"""SQL stores reached through any SQLAlchemy URL.

The subject is found in the identity table(s); every other table is reached by following the
references of the data map (``invoice_lines.invoice_id -> invoices.id -> accounts.id``). Each
table's rows are selected by one statement whose membership test the database evaluates with
nested ``IN (SELECT ...)``, and streamed in batches through a server-side cursor.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, Engine, MetaData, Table, false, or_, select
from sqlalchemy.exc import NoSuchTableError, OperationalError

from dsr.datamap import Store
from dsr.db import make_engine
from dsr.stores.base import CollectResult, Connector, StoreUnavailable, Subject, TableSink, register


@register
class SqlConnector(Connector):
    type_name = "sql"
    batch_size = 5000

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self._engine: Engine | None = None
        self._tables: dict[str, Table] = {}

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = make_engine(self.store.url)
        return self._engine

    def _reflect(self) -> dict[str, Table]:
        if not self._tables:
            metadata = MetaData()
            try:
                metadata.reflect(self.engine, only=list(self.store.tables))
            except (NoSuchTableError, OperationalError) as exc:
                raise StoreUnavailable(f"store {self.store.name}: {exc.__class__.__name__}: {exc}") from exc
            except Exception as exc:  # e.g. InvalidRequestError for tables missing from `only`
                raise StoreUnavailable(f"store {self.store.name}: {exc}") from exc
            self._tables = dict(metadata.tables)
        return self._tables

    def membership(self, table: str, subject: Subject) -> ColumnElement[bool]:
        """The condition that a row of ``table`` belongs to the subject."""
        tables = self._reflect()
        t = tables[table]
        conditions: list[ColumnElement[bool]] = [
            t.c[column] == subject.identities[kind]
            for kind, (ident_table, column) in self.store.identities.items()
            if ident_table == table and kind in subject.identities
        ]
        for column, (other, other_column) in self.store.tables[table].references.items():
            o = tables[other]
            conditions.append(t.c[column].in_(select(o.c[other_column]).where(self.membership(other, subject))))
        return or_(*conditions) if conditions else false()

    def collect(self, subject: Subject, sink: TableSink) -> CollectResult:
        tables = self._reflect()
        result = CollectResult()
        try:
            with self.engine.connect() as conn:
                for name, spec in self.store.tables.items():
                    t = tables[name]
                    stmt = select(t).where(self.membership(name, subject)).order_by(t.c[spec.key])
                    rows = conn.execution_options(yield_per=self.batch_size).execute(stmt)
                    writer = sink.open_table(name, list(rows.keys()))
                    count = 0
                    for batch in rows.partitions():
                        writer.write(batch)
                        count += len(batch)
                    writer.close()
                    result.found[name] = count
        except OperationalError as exc:
            raise StoreUnavailable(f"store {self.store.name}: {exc.orig or exc}") from exc
        return result

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()

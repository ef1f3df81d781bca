"""The connector contract, and the registry that finds a connector by its data map type name.

A connector finds one subject's data in one store. It can ``collect``, ``preview`` and ``erase`` (and
later ``rectify``, ``restrict``); what a store cannot do raises ``NotSupported``. Every operation must be
idempotent: a retried job runs it again. Each connector declares the settings it reads from the
data map (``connection``, identity lookups, per-table options) as marshmallow schemas, so
``dsr datamap check`` validates them with file and line before anything runs.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, BinaryIO, ClassVar, Literal, Protocol

from marshmallow import EXCLUDE, Schema, ValidationError

from dsr.datamap.model import Store


class NotSupported(Exception):
    """The store cannot do this operation (the task is then planned as manual work)."""


class StoreUnavailable(Exception):
    """The store could not be reached or read; the job will be retried."""


class Refused(StoreUnavailable):
    """The store answered that it did not or will not do it (a processor's 'failed' or 'cancelled'):
    final for this attempt, even for a task that was waiting for the store's answer."""


class Pending(Exception):
    """The store accepted the request and will answer later (a processor working asynchronously).

    ``reference`` is the store's id for it; ``retry_after`` how many seconds until asking again.
    """

    def __init__(self, reference: str, retry_after: float | None, note: str = "") -> None:
        super().__init__(note or f"pending at the store as {reference}")
        # None: nothing to poll; the answer comes from a person (a manual store) or a callback.
        self.reference, self.retry_after, self.note = reference, retry_after, note


@dataclass(frozen=True)
class Subject:
    """How the data subject is known (identity type -> normalised value), and the case asking.

    ``case_id`` is stable across retries, so a store that takes requests (a processor) can be
    asked idempotently; ``received_at`` is the original receipt, which processors must be told.
    """

    identities: Mapping[str, str]
    case_id: str | None = None
    received_at: datetime | None = None
    request_type: str | None = None

    @classmethod
    def from_email(cls, email: str, **context: Any) -> Subject:
        return cls({"email": email.strip().lower()}, **context)


class Progress(Protocol):
    """Checkpoints of a long collection, so a retried job resumes instead of starting over.

    A connector that reads in units (tables) asks ``done(unit)`` before one and skips it when true
    (its output from the earlier attempt is kept), and calls ``complete(unit, found)`` after one."""

    def done(self, unit: str) -> bool: ...

    def found(self, unit: str) -> int: ...

    def complete(self, unit: str, found: int) -> None: ...


# What a column holds, for the package's JSON twin and its schema (dsr.exports.json_files): the CSV
# cannot tell 42 from "42", so the store says so when it opens a table. "decimal": exact numbers
# (money), kept as text so no reader rounds them; "json": JSON text of an object or list; "any": the
# values carry their own JSON types (a log line's fields), resolved from what is written.
ColumnKind = Literal["string", "integer", "number", "decimal", "boolean", "date-time", "date", "json", "any"]
KINDS: frozenset[str] = frozenset(ColumnKind.__args__)  # type: ignore[attr-defined]


class JsonText(str):
    """A nested object or list written as JSON text into a cell (its column's kind is then known)."""

    __slots__ = ()


class TableWriter(Protocol):
    def write(self, rows: Sequence[Sequence[Any]]) -> None: ...

    def close(self) -> None: ...


class TableSink(Protocol):
    """Where collected records go, table by table, batch by batch (never a whole table in memory),
    and files (recordings, attachments) one by one. ``kinds``: each column's ``ColumnKind``, when
    the store knows them (None: all text)."""

    def open_table(self, name: str, columns: Sequence[str],
                   kinds: Sequence[ColumnKind] | None = None) -> TableWriter: ...

    def add_file(self, table: str, name: str, content: BinaryIO) -> None: ...


# --- erasure (Art. 17) ---------------------------------------------------------------------------
# The domain decides per table what erasure does to the subject's records (the category's policy, the
# contract, statutory retention); a connector carries it out set-based and counts, never one statement
# per record, never recording a value. ``preview`` counts what ``erase`` would do and changes nothing.
ErasureMethod = Literal["delete", "null", "retain"]


@dataclass(frozen=True)
class TableErasure:
    """What to do with the subject's records of one table. ``null``: set ``fields`` to NULL, or to the
    value ``replacements`` names (a NOT NULL column); ``retain``: keep them and count them.

    ``before`` (column, day): only the records whose date in that column falls before the day (in the
    store's time zone; a record without a date never does), the retention register's run. The records of
    other tables that belong to the subject through these (invoice lines through their invoice) are then
    only those of these records. A connector that cannot bound an erasure by date raises NotSupported."""

    method: ErasureMethod
    fields: tuple[str, ...] = ()
    replacements: Mapping[str, Any] = field(default_factory=dict)
    before: tuple[str, date] | None = None


@dataclass(frozen=True)
class ErasureCount:
    """One table's outcome, in records: found (the subject's, before), deleted, changed (fields nulled
    or replaced), retained (kept, e.g. under a statutory duty)."""

    found: int = 0
    deleted: int = 0
    changed: int = 0
    retained: int = 0


@dataclass
class ErasureResult:
    tables: dict[str, ErasureCount] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # for the DPO office, like CollectResult.notes
    # What the store gave as proof that it erased (a processor's signed completion, AT-31): JSON-ready,
    # without the subject's data, for the domain to keep with the task. Empty: the counts are the proof.
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def touched(self) -> int:
        """Records deleted or changed."""
        return sum(c.deleted + c.changed for c in self.tables.values())


class TooMany(Exception):
    """An erasure would touch more records of a store than the bound allows: nothing was changed, a
    person must look (a broad identity, a wrong key)."""

    def __init__(self, store: str, touched: int, bound: int) -> None:
        super().__init__(f"store {store}: erasure would delete or change {touched} records, more than the bound "
                         f"of {bound}; nothing was changed")
        self.store, self.touched, self.bound = store, touched, bound


@dataclass
class CollectResult:
    found: dict[str, int] = field(default_factory=dict)  # table -> records
    files: dict[str, int] = field(default_factory=dict)  # table -> files
    notes: list[str] = field(default_factory=list)  # what the DPO should know (e.g. processor reference)

    @property
    def total(self) -> int:
        return sum(self.found.values()) + sum(self.files.values())


@dataclass(frozen=True)
class ConnectorContext:
    """What a connector may need beyond its store: the instance folder, and the other connectors
    (a files store may find its blobs through a SQL store's index table)."""

    instance_dir: Path
    connector_for: Any = None  # Callable[[str], Connector]
    base_url: str | None = None  # this installation's public URL, for a processor's status callbacks


class _Options(Schema):
    class Meta:
        unknown = EXCLUDE


class Connector:
    type_name: ClassVar[str]
    looks_up_names: ClassVar[bool] = False  # whether ``names`` works (mask: names)
    dates_records: ClassVar[bool] = False  # whether ``retained`` and a dated erasure (``before``) work
    connection_schema: ClassVar[type[Schema]] = _Options
    identity_schema: ClassVar[type[Schema]] = _Options
    table_schema: ClassVar[type[Schema]] = _Options

    def __init__(self, store: Store, context: ConnectorContext) -> None:
        # The connection's ${VARIABLE}s are read here, when a process first needs this store (a worker),
        # not when the map is loaded: raises UnsetVariable naming the variable and the store.
        self.store = store.resolved()
        self.context = context

    @classmethod
    def validate_links(cls, store: Store, stores: Mapping[str, Store]) -> list[tuple[str, str]]:
        """Settings that name other stores of the map (a files store's index store). Default: none."""
        return []

    @classmethod
    def validate(cls, store: Store) -> list[tuple[str, str]]:
        """Problems with this connector's settings in the data map, as (dotted path, message)."""
        problems: list[tuple[str, str]] = []
        base = f"stores.{store.name}"
        problems += _check(cls.connection_schema, store.connection, f"{base}.connection")
        for kind, spec in store.identities.items():
            problems += _check(cls.identity_schema, spec, f"{base}.identities.{kind}")
        for name, table in store.tables.items():
            problems += _check(cls.table_schema, table.options, f"{base}.tables.{name}")
            if not cls.looks_up_names:
                problems += [(f"{base}.tables.{name}.fields.{column}.names_from",
                              f"a {cls.type_name} store cannot look up names; mask: names is for sql stores")
                             for column, rule in table.fields.items() if rule.names_from]
            if not cls.dates_records and table.erasure is not None and table.erasure.dated_by:
                problems.append((f"{base}.tables.{name}.erasure.dated_by",
                                 f"a {cls.type_name} store cannot date the records it keeps; dated_by is for sql "
                                 "stores"))
        return problems

    @classmethod
    def reads_from(cls, store: Store) -> set[str]:
        """Other stores this one's erasure reads (a files store's index): they must still hold the
        subject's records while it erases, so their own erasure runs after it. Default: none."""
        return set()

    def check(self) -> list[str]:
        """Connect and report what the data map names but the store lacks (``datamap check --connect``).

        Each problem reads ``dotted.path: message``; a problem that should not fail the check starts
        with ``warning:``."""
        return []

    def collect(self, subject: Subject, sink: TableSink, progress: Progress | None = None) -> CollectResult:
        raise NotSupported(f"{self.type_name} cannot collect")

    def preview(self, subject: Subject, plan: Mapping[str, TableErasure]) -> ErasureResult:
        """What ``erase`` would do with ``plan`` (table -> what to do), counted; changes nothing."""
        raise NotSupported(f"{self.type_name} cannot preview an erasure")

    def erase(self, subject: Subject, plan: Mapping[str, TableErasure], *, bound: int | None = None) -> ErasureResult:
        """Carry out ``plan`` for the subject's records: idempotent (a second run finds nothing more to
        do and says so), all or nothing per store where the store allows it. Raises ``TooMany`` before
        changing anything when more than ``bound`` records would be deleted or changed."""
        raise NotSupported(f"{self.type_name} cannot erase")

    def retained(self, subject: Subject, table: str, column: str) -> list[tuple[date | None, int]]:
        """The subject's records of ``table`` counted per day of ``column`` (in the store's time zone),
        oldest first; records without a date last, as (None, count). For the retention register: counts
        and days only, never a value."""
        raise NotSupported(f"{self.type_name} stores cannot date the records they keep")

    def parts_of(self, table: str) -> list[str]:
        """The tables whose records belong to the subject only through ``table``'s (invoice lines through
        their invoice): an erasure bounded to some of ``table``'s records (``before``) can take theirs
        along. Default: none."""
        return []

    def values(self, subject: Subject, table: str, column: str) -> list[Any]:
        """The distinct values of ``column`` in the subject's records of ``table`` (the status of the
        subject's contract, data map ``contract:``)."""
        raise NotSupported(f"{self.type_name} stores cannot read a column's values")

    def identity_values(self, kind: str) -> Iterator[str]:
        """Every value of identity type ``kind`` this store looks subjects up by, streamed (the replay of
        erasures after a restore matches them against keyed hashes). Default: none."""
        return iter(())

    def names(self, source: str) -> list[str]:
        """The values of ``table.column`` in this store: the names a ``mask: names`` field cuts out of
        its text (staff named in a note)."""
        raise NotSupported(f"{self.type_name} stores cannot look up names")

    def resolve(self, subject: Subject) -> dict[str, str]:
        """Other identities of the subject this store knows (an account's customer number and phone,
        found by its e-mail), so stores keyed by those find the subject too. Default: none."""
        return {}

    def close(self) -> None:
        """Release connections; called when the worker shuts down."""


def refuse_dated(store: str, plan: Mapping[str, TableErasure]) -> None:
    """For connectors that cannot bound an erasure by date: a plan with ``before`` is not carried out
    (it would erase every record of the table, not only those whose time has come)."""
    dated = sorted(name for name, step in plan.items() if step.before is not None)
    if dated:
        raise NotSupported(f"store {store}: cannot erase only the records dated before a day "
                           f"({', '.join(dated)}); a person erases them when their time comes")


def _check(schema: type[Schema], data: Mapping[str, Any], path: str) -> list[tuple[str, str]]:
    try:
        schema().load(dict(data))
    except ValidationError as exc:
        return list(_flatten(exc.messages, path))
    return []


def _flatten(messages: Any, prefix: str) -> Iterable[tuple[str, str]]:
    if isinstance(messages, dict):
        for key, value in messages.items():
            yield from _flatten(value, prefix if key == "_schema" else f"{prefix}.{key}")
    else:
        yield prefix, " ".join(messages) if isinstance(messages, list) else str(messages)


_REGISTRY: dict[str, type[Connector]] = {}
# Built-in connectors by type name -> module; imported on first use so a missing driver of one
# store type never stops the others from loading.
_BUILTIN = {
    "sql": "dsr.stores.sql",
    "jsonl": "dsr.stores.jsonl",
    "files": "dsr.stores.files",
    "processor": "dsr.stores.processor",
    "manual": "dsr.stores.manual",
}


def register(cls: type[Connector]) -> type[Connector]:
    _REGISTRY[cls.type_name] = cls
    return cls


def connector_class(type_name: str) -> type[Connector]:
    if type_name not in _REGISTRY and type_name in _BUILTIN:
        try:
            importlib.import_module(_BUILTIN[type_name])
        except ImportError as exc:
            raise NotSupported(f"connector {type_name!r} cannot load: {exc}") from exc
    try:
        return _REGISTRY[type_name]
    except KeyError:
        known = ", ".join(sorted(set(_REGISTRY) | set(_BUILTIN)))
        raise NotSupported(f"no connector for store type {type_name!r} (known: {known})") from None


def validate_store(store: Store, stores: Mapping[str, Store] | None = None) -> list[tuple[str, str]]:
    """The data map loader's hook: check a store's connector-specific settings, then its links."""
    try:
        cls = connector_class(store.connector)
    except NotSupported as exc:
        return [(f"stores.{store.name}.connector", str(exc))]
    problems = cls.validate(store)
    if not problems and stores is not None:
        problems = cls.validate_links(store, stores)
    return problems

"""Folders of files: call recordings, voicemails, ticket attachments.

A files store is one folder (``connection.root``). Each of its tables finds the subject's files
either through an **index** table in a SQL store (the rows of ``voicemails`` that belong to the
subject, found by that store's identities and references, name the files) or through a path
**pattern** with an identity placeholder (``attachments/{customer_id}/*``).

Every file goes into the package as it is (streamed in chunks, never whole in memory), and one row
per file goes into a table of the same name: the file's name in the package, its size and SHA-256
(computed while the file streams), what became of it (``exported``, ``missing``, ``refused``) and
the index row's own columns. The data map's field rules apply to those columns like to any table's
(``DisclosingSink``), so another party's number in a voicemail index is masked on the way out.

A path from a store is never trusted: it is resolved (symlinks included) and refused unless it
stays inside the root, so an index row saying ``../../etc/passwd`` is reported, not read. A file the
index lists but the folder lacks is a note for the DPO, not a failure. A root that cannot be read
raises ``StoreUnavailable`` (the job is retried).

Erasure (``preview``/``erase``) removes the subject's blobs, then their index rows; erase this store
before the SQL store that holds its index (see "erasure" in the class).
"""

from __future__ import annotations

import glob
import hashlib
import io
import itertools
import os
import stat
import string
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, cast

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema
from sqlalchemy import ColumnElement, MetaData, Table, and_, delete, false, inspect, or_, select
from sqlalchemy.exc import NoSuchTableError, SQLAlchemyError

from dsr.datamap.model import Store
from dsr.datamap.schema import IDENTITY_TYPES, NAME
from dsr.stores.base import (
    CollectResult,
    ColumnKind,
    Connector,
    ErasureCount,
    ErasureResult,
    NotSupported,
    Progress,
    StoreUnavailable,
    Subject,
    TableErasure,
    TableSink,
    TooMany,
    refuse_dated,
    register,
)
from dsr.stores.sql import ErasurePlanError, SqlConnector, column_kind

# Status of a file in the metadata table.
EXPORTED, MISSING, REFUSED, NO_FILE = "exported", "missing", "refused", "no_file"
FILE_COLUMNS = ("file", "size", "sha256", "status")
FILE_KINDS: tuple[ColumnKind, ...] = ("string", "integer", "string", "string")
CHUNK = 1024 * 1024
SAMPLE = 5  # indexed files ``check`` looks for
_WILDCARDS = "*?[]"


# --- data map settings ---------------------------------------------------------------------------

class _Connection(Schema):
    class Meta:
        unknown = RAISE

    root = fields.String(required=True, validate=validate.Length(min=1))
    # A SQL store that knows the subject's other identities (customer number, phone) for patterns
    # whose placeholder the request does not carry: the subject is usually known by e-mail only.
    identities_from = fields.String(load_default=None, validate=NAME)
    batch_size = fields.Integer(load_default=1000, validate=validate.Range(min=1))


class _Index(Schema):
    class Meta:
        unknown = RAISE

    store = fields.String(required=True, validate=NAME)
    table = fields.String(required=True)
    path_column = fields.String(required=True)
    key = fields.String(load_default="id")
    # A column with the file's own name (an upload's original name) for the package; default: the
    # last part of the path.
    name_column = fields.String(load_default=None)
    # How index rows belong to the subject, when the SQL store does not list the index table
    # itself: column here -> "table.column" of a table the SQL store lists (as in its references).
    references = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict)
    # Index columns copied into the metadata rows (default: all of them).
    columns = fields.List(fields.String(), load_default=None)

    @validates_schema
    def _targets(self, data: dict[str, Any], **_: Any) -> None:
        for target in data["references"].values():
            if target.count(".") != 1:
                raise ValidationError(f"{target!r} must be written table.column", "references")


class _TableOptions(Schema):
    class Meta:
        unknown = RAISE

    index = fields.Nested(_Index, load_default=None)
    pattern = fields.String(load_default=None)

    @validates_schema
    def _one_way(self, data: dict[str, Any], **_: Any) -> None:
        if (data["index"] is None) == (data["pattern"] is None):
            raise ValidationError("give exactly one of index (a table listing the files) or pattern "
                                  "(a path with an identity placeholder)")
        if data["pattern"] is not None:
            problem = _pattern_problem(data["pattern"])
            if problem:
                raise ValidationError(problem, "pattern")


def _placeholders(pattern: str) -> list[str]:
    """The identity types a pattern names (``{customer_id}``); raises ValueError on bad braces."""
    names = []
    for _literal, name, spec, conversion in string.Formatter().parse(pattern):
        if name is None:
            continue
        if spec or conversion or not name:
            raise ValueError("write a placeholder as {identity}, without a format or conversion")
        names.append(name)
    return names


def _pattern_problem(pattern: str) -> str | None:
    try:
        names = _placeholders(pattern)
    except ValueError as exc:
        return str(exc)
    if pattern.startswith(("/", "\\")) or Path(pattern).is_absolute() or ".." in Path(pattern).parts:
        return f"{pattern!r} must be a path inside the root (relative, without ..)"
    if not names:
        return (f"{pattern!r} names no identity placeholder such as {{customer_id}}: every subject would get "
                "every file")
    unknown = sorted(set(names) - set(IDENTITY_TYPES))
    if unknown:
        return f"unknown placeholder {{{unknown[0]}}} (use one of {', '.join(IDENTITY_TYPES)})"
    for name in set(names):
        token = "{" + name + "}"
        for at in _find_all(pattern, token):
            before = pattern[at - 1] if at else ""
            after = pattern[at + len(token):at + len(token) + 1]
            if (before and before in _WILDCARDS) or (after and after in _WILDCARDS):
                return (f"a wildcard next to {token} would also match other subjects' files "
                        f"(K1* matches K10); put a separator between them")
    return None


def _find_all(text: str, token: str) -> Iterator[int]:
    at = text.find(token)
    while at >= 0:
        yield at
        at = text.find(token, at + 1)


def _references(index: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    out = {}
    for column, target in (index.get("references") or {}).items():
        other, _, other_column = str(target).partition(".")
        out[column] = (other, other_column)
    return out


# --- streaming with a checksum -------------------------------------------------------------------

class HashingReader(io.RawIOBase):
    """Reads a file object through, counting bytes and computing SHA-256 of what the reader took."""

    def __init__(self, raw: BinaryIO) -> None:
        super().__init__()
        self._raw = raw
        self._digest = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self._raw.read(len(view))
        n = len(data)
        view[:n] = data
        self._digest.update(data)
        self.size += n
        return n

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()


def _open_blob(path: Path) -> BinaryIO:
    """The one place a file of the store is opened (tests watch it)."""
    return path.open("rb")


def _unlink_blob(path: Path) -> bool:
    """The one place a file of the store is removed (tests watch it); False if it was gone already."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def _sync_folders(folders: Iterable[Path]) -> None:
    """Make unlinks durable before the index rows' DELETE commits (best effort where a folder cannot
    be opened or fsynced)."""
    for folder in folders:
        try:
            fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except OSError:
            continue
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)


def _drain(reader: HashingReader) -> None:
    """Read what a sink left unread, so size and checksum cover the whole file."""
    while reader.read(CHUNK):
        pass


# --- package names -------------------------------------------------------------------------------

def _safe(name: str) -> str:
    """The same rule as the CSV sink's: no folders, hidden files or control characters."""
    cleaned = "".join(c if c.isalnum() or c in "-_.@+" else "_" for c in name).lstrip(".")
    return cleaned or "unnamed"


@dataclass
class _Names:
    """Unique, safe file names within one table of the package."""

    used: set[str] = field(default_factory=set)

    def take(self, path: str) -> str:
        stem, dot, suffix = _safe(Path(path).name).rpartition(".")
        if not dot or not stem:
            stem, suffix = stem + dot + suffix, ""
        suffix = ("." + suffix[:20]) if suffix else ""
        stem = stem[:120]
        name = stem + suffix
        for n in itertools.count(2):
            if name not in self.used:
                break
            name = f"{stem}-{n}{suffix}"
        self.used.add(name)
        return name


# --- the connector -------------------------------------------------------------------------------

@dataclass
class _Tally:
    missing: list[Any] = field(default_factory=list)
    refused: list[Any] = field(default_factory=list)


@dataclass
class _Scan:
    """One table's files of the subject before an erasure (``ref``: the index key, or the path)."""

    key: str = "path"
    indexed: bool = False  # found through an index table (its rows are deleted too)
    found: int = 0
    missing: list[Any] = field(default_factory=list)
    refused: list[Any] = field(default_factory=list)
    refused_paths: set[str] = field(default_factory=set)  # kept out of the DELETE: their file stays
    linked: list[Any] = field(default_factory=list)  # files with other names (hard links)
    unknown: list[str] = field(default_factory=list)  # pattern placeholders the subject is not known by

    def add(self, value: Any, ref: Any, root: Path) -> None:
        self.found += 1
        if value is None or str(value).strip() == "":
            return  # a row without a file: only the row goes
        path = _inside(root, str(value))
        if path is None:
            self.refused.append(ref)
            self.refused_paths.add(str(value))
            return
        try:
            info = path.stat()
        except OSError:
            self.missing.append(ref)
            return
        if not stat.S_ISREG(info.st_mode):  # a folder, pipe or device: never opened, never removed
            self.missing.append(ref)
        elif info.st_nlink > 1:
            self.linked.append(ref)


@register
class FilesConnector(Connector):
    type_name = "files"
    connection_schema = _Connection
    table_schema = _TableOptions

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The settings with their defaults (the data map loader has validated them already).
        self.connection: dict[str, Any] = _Connection().load(dict(self.store.connection))
        self.tables: dict[str, dict[str, Any]] = {name: _TableOptions().load(dict(t.options))
                                                  for name, t in self.store.tables.items()}
        self._index_tables: dict[tuple[str, str], Table] = {}

    # ---- validation

    @classmethod
    def validate(cls, store: Any) -> list[tuple[str, str]]:
        problems = super().validate(store)
        if store.identities:
            problems.append((f"stores.{store.name}.identities", "a files store finds files through its tables' "
                             "index or pattern; identities are not used here"))
        return problems

    @classmethod
    def validate_links(cls, store: Store, stores: Mapping[str, Store]) -> list[tuple[str, str]]:
        """What only the whole map can tell: the stores and tables an index names exist and fit."""
        problems: list[tuple[str, str]] = []
        base = f"stores.{store.name}"
        source = store.connection.get("identities_from")
        if source is not None:
            problems += _sql_store(f"{base}.connection.identities_from", source, stores)
        for name, table in store.tables.items():
            index = table.options.get("index")
            if index is not None:
                problems += _index_links(f"{base}.tables.{name}.index", index, stores)
        return problems

    @classmethod
    def reads_from(cls, store: Store) -> set[str]:
        """The stores that index this one's files, and the one its identities come from."""
        stores = {str(t.options["index"]["store"]) for t in store.tables.values() if t.options.get("index")}
        if store.connection.get("identities_from"):
            stores.add(str(store.connection["identities_from"]))
        return stores

    # ---- check

    @property
    def root(self) -> Path:
        return Path(self.connection["root"]).expanduser()

    def check(self) -> list[str]:
        """The root is a folder; each index store, table and column exists; a few indexed files are there."""
        base = f"stores.{self.store.name}"
        problems: list[str] = []
        root = self.root
        if not root.is_dir():
            problems.append(f"{base}.connection.root: no folder {root} (or it cannot be read)")
        source = self.connection["identities_from"]
        if source is not None:
            try:
                self._sql(source)
            except NotSupported as exc:
                problems.append(f"{base}.connection.identities_from: {exc}")
        for name, options in self.tables.items():
            path = f"{base}.tables.{name}"
            index = options["index"]
            if index is None:
                unknowable = sorted(set(_placeholders(options["pattern"])) - {"email"})
                if unknowable and source is None:
                    problems.append(f"warning: {path}.pattern: a request names the subject by e-mail, so "
                                    f"{{{unknowable[0]}}} is known only when connection.identities_from names a "
                                    "SQL store that knows it")
                continue
            try:
                sql = self._sql(index["store"])
            except NotSupported as exc:
                problems.append(f"{path}.index.store: {exc}")
                continue
            problems += [f"{p}: {m}" for p, m in _index_links(f"{path}.index", index, {sql.store.name: sql.store})]
            problems += self._check_index(f"{path}.index", index, sql, root if root.is_dir() else None)
        return problems

    def _check_index(self, path: str, index: Mapping[str, Any], sql: SqlConnector,
                     root: Path | None) -> list[str]:
        table_name = index["table"]
        try:
            inspector = inspect(sql.engine)
            if table_name not in inspector.get_table_names():
                return [f"{path}.table: no table {table_name!r} in store {index['store']}"]
            columns = {c["name"] for c in inspector.get_columns(table_name)}
            indexed = {i["column_names"][0] for i in inspector.get_indexes(table_name) if i["column_names"]}
        except SQLAlchemyError as exc:
            return [f"{path}.store: cannot read store {index['store']}: {exc.__class__.__name__}: {exc}"]
        problems = []
        needed = [("path_column", index["path_column"]), ("key", index["key"])]
        needed += [("name_column", index["name_column"])] if index["name_column"] else []
        needed += [(f"references.{c}", c) for c in _references(index)]
        needed += [(f"columns.{c}", c) for c in index["columns"] or []]
        for where, column in needed:
            if column not in columns:
                problems.append(f"{path}.{where}: no column {column!r} in {index['store']}.{table_name}")
        for column in _references(index):
            if column in columns and column not in indexed:
                problems.append(f"warning: {path}.references.{column}: no index on {table_name}.{column}; finding "
                                "a subject's files will scan the table")
        if problems or root is None:
            return problems
        return problems + self._sample(path, index, sql, root)

    def _sample(self, path: str, index: Mapping[str, Any], sql: SqlConnector, root: Path) -> list[str]:
        try:
            t = self._index_table(sql, index)
            column = t.c[index["path_column"]]
            with sql.engine.connect() as conn:
                values = list(conn.execute(select(column).where(column.is_not(None)).limit(SAMPLE)).scalars())
        except (SQLAlchemyError, StoreUnavailable) as exc:
            return [f"{path}: cannot read the index: {exc}"]
        resolved = root.resolve()
        outside = [v for v in values if _inside(resolved, str(v)) is None]
        missing = [v for v in values if v not in outside and not _is_file(_inside(resolved, str(v)))]
        problems = []
        if missing:
            problems.append(f"warning: {path}: {len(missing)} of {len(values)} sampled files listed in "
                            f"{index['store']}.{index['table']} are missing under {root} (e.g. {missing[0]})")
        if outside:
            problems.append(f"warning: {path}: {len(outside)} of {len(values)} sampled paths in "
                            f"{index['store']}.{index['table']} point outside {root} and would be refused")
        return problems

    # ---- collect

    def collect(self, subject: Subject, sink: TableSink, progress: Progress | None = None) -> CollectResult:
        root = self._root()
        result = CollectResult()
        for name, options in self.tables.items():
            if options["index"] is not None:
                self._collect_index(name, options["index"], root, subject, sink, result)
            else:
                self._collect_pattern(name, options["pattern"], root, subject, sink, result)
        return result

    def _root(self) -> Path:
        root = self.root
        try:
            resolved = root.resolve(strict=True)
            if not resolved.is_dir():
                raise NotADirectoryError(str(root))
            with os.scandir(resolved) as entries:  # readable? (one entry, not the whole listing)
                next(entries, None)
        except OSError as exc:
            raise StoreUnavailable(f"store {self.store.name}: cannot read the folder {root}: "
                                   f"{exc.__class__.__name__}: {exc.strerror or exc}") from exc
        return resolved

    def _collect_index(self, name: str, index: Mapping[str, Any], root: Path, subject: Subject, sink: TableSink,
                       result: CollectResult) -> None:
        sql = self._sql(index["store"])
        t = self._index_table(sql, index)
        wanted = index["columns"]
        extra = [c.name for c in t.columns if wanted is None or c.name in wanted]
        key = t.c[index["key"]] if index["key"] in t.c else t.c[index["path_column"]]
        # The path, key and name are read alongside even when ``columns`` leaves them out of the export.
        named = t.c[index["name_column"]] if index["name_column"] else t.c[index["path_column"]]
        stmt = (select(*(t.c[c] for c in extra), t.c[index["path_column"]].label("_dsr_path"), key.label("_dsr_key"),
                       named.label("_dsr_name"))
                .where(self._membership(sql, t, index, subject)).order_by(key))
        batch = int(self.connection["batch_size"])
        names, tally, rows, files = _Names(), _Tally(), 0, 0
        writer = sink.open_table(name, [*FILE_COLUMNS, *_renamed(extra)],
                                 [*FILE_KINDS, *(column_kind(t.c[c].type) for c in extra)])
        try:
            with sql.engine.connect() as conn:
                for part in conn.execution_options(yield_per=batch).execute(stmt).partitions():
                    out = []
                    for row in part:
                        path, ref, own_name = row[-3:]
                        entry = self._export(name, path, root, sink, names, tally, ref, own_name)
                        out.append([*entry, *row[:-3]])
                        files += entry[3] == EXPORTED
                    writer.write(out)
                    rows += len(out)
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"store {index['store']} (index of {self.store.name}.{name}): "
                                   f"{exc.__class__.__name__}: {exc}") from exc
        finally:
            writer.close()
        result.found[name] = rows
        result.files[name] = files
        result.notes += _notes(name, f"the index {index['store']}.{index['table']}", key.name, tally)

    def _collect_pattern(self, name: str, pattern: str, root: Path, subject: Subject, sink: TableSink,
                         result: CollectResult) -> None:
        values, unknown = self._identity_values(_placeholders(pattern), subject)
        writer = sink.open_table(name, [*FILE_COLUMNS, "path", "modified_at"], [*FILE_KINDS, "string", "date-time"])
        names, tally, seen, files = _Names(), _Tally(), 0, 0
        try:
            if unknown:
                result.notes.append(f"{name}: not searched: the subject's {', '.join(unknown)} is not known "
                                    f"(pattern {pattern})")
            for relative, match in _pattern_matches(pattern, values, root):
                seen += 1
                entry = self._export(name, relative, root, sink, names, tally, relative)
                files += entry[3] == EXPORTED
                writer.write([[*entry, relative, _modified(match) if entry[3] == EXPORTED else None]])
        finally:
            writer.close()
        result.found[name] = seen
        result.files[name] = files
        result.notes += _notes(name, f"the pattern {pattern}", "path", tally)

    def _export(self, table: str, value: Any, root: Path, sink: TableSink, names: _Names, tally: _Tally,
                ref: Any, own_name: Any = None) -> list[Any]:
        """Stream one file into the package; its file, size, sha256 and status."""
        if value is None or str(value).strip() == "":
            return ["", None, None, NO_FILE]
        path = _inside(root, str(value))
        if path is None:
            tally.refused.append(ref)
            return ["", None, None, REFUSED]
        try:
            if not path.is_file():  # gone, a folder, or a pipe or device that must never be opened
                raise FileNotFoundError(str(path))
            handle = _open_blob(path)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            tally.missing.append(ref)
            return ["", None, None, MISSING]
        except OSError as exc:
            raise StoreUnavailable(f"store {self.store.name}: cannot read {value}: {exc.strerror or exc}") from exc
        package_name = names.take(str(own_name) if own_name else path.name)
        try:
            with handle:
                reader = HashingReader(handle)
                sink.add_file(table, package_name, cast(BinaryIO, reader))
                _drain(reader)
        except OSError as exc:
            raise StoreUnavailable(f"store {self.store.name}: cannot read {value}: {exc.strerror or exc}") from exc
        return [f"{table}/{package_name}", reader.size, reader.sha256, EXPORTED]

    # ---- erasure (Art. 17)
    # The subject's files are those collect finds (the same membership, the same path check). One
    # index row is one file: counts are in files. ``delete`` removes the blobs and their index rows,
    # ``retain`` counts them and changes nothing; ``null`` is refused (see _check_plan).
    #
    # Order for crash safety: blobs first, then their index rows. A worker killed in between leaves
    # index rows that point at missing files: a rerun finds them through the index as before (collect
    # reports them as "listed but missing"), counts them and deletes the rows, so the job completes.
    # The other order would leave blobs without an index row, which nothing could ever find again:
    # the data would be kept forever. The unlinks are made durable (the folders fsynced) before the
    # rows' DELETE commits, so a power loss cannot reorder them either.
    #
    # Erase this store BEFORE the SQL store that holds its index (in the default map portal_db): the
    # index rows belong to the subject through the SQL store's rows (ticket_attachments ->
    # support_tickets -> accounts), and the sql erasure refuses to delete support_tickets while
    # ticket_attachments rows (a foreign key) still point at them. An index table the SQL store's
    # map lists itself would otherwise lose its rows there first and orphan the blobs.

    # Test seam: called after the blobs are unlinked and before the index rows are deleted.
    after_unlink: Callable[[], object] | None = None

    def preview(self, subject: Subject, plan: Mapping[str, TableErasure]) -> ErasureResult:
        return self._erasure(subject, plan, bound=None, apply=False)

    def erase(self, subject: Subject, plan: Mapping[str, TableErasure], *, bound: int | None = None) -> ErasureResult:
        return self._erasure(subject, plan, bound=bound, apply=True)

    def _check_plan(self, plan: Mapping[str, TableErasure]) -> None:
        refuse_dated(self.store.name, plan)
        for name, step in plan.items():
            if name not in self.tables:
                raise ErasurePlanError(f"store {self.store.name}: no table {name!r} in the data map")
            if step.method == "null":
                # Nulling index columns would leave the file itself, the recording or the upload,
                # which is the personal data: an erasure that is none. The domain must say delete or
                # retain.
                raise ErasurePlanError(f"store {self.store.name}: table {name}: null cannot erase a file's content; "
                                       "use delete (the file and its index row) or retain")
            if step.method not in ("delete", "retain"):
                raise ErasurePlanError(f"store {self.store.name}: table {name}: unknown method {step.method!r}")

    def _erasure(self, subject: Subject, plan: Mapping[str, TableErasure], *, bound: int | None,
                 apply: bool) -> ErasureResult:
        self._check_plan(plan)
        root = self._root()
        names = [name for name in self.tables if name in plan]
        deleting = [name for name in names if plan[name].method == "delete"]
        # Count first, changing nothing: the preview, the bound's check, and the paths never to delete.
        scans = {name: self._scan(name, root, subject) for name in names}
        counts = {name: _planned(plan[name], scan) for name, scan in scans.items()}
        touched = sum(c.deleted for c in counts.values())
        if apply and bound is not None and touched > bound:
            raise TooMany(self.store.name, touched, bound)
        extra: dict[str, int] = {}
        if apply and touched:
            for name in deleting:  # phase 1: the blobs
                done = self._unlink_all(name, root, subject)
                if self.tables[name]["index"] is None:  # a pattern's files have no rows: done is the count
                    counts[name] = replace(counts[name], deleted=done)
            if self.after_unlink is not None:
                self.after_unlink()
            by_store: dict[str, list[str]] = {}
            for name in deleting:
                index = self.tables[name]["index"]
                if index is not None and scans[name].found:
                    by_store.setdefault(index["store"], []).append(name)
            for store, tables in by_store.items():  # phase 2: the index rows, one transaction per store
                deleted = self._delete_rows(store, tables, root, subject, scans)
                for name, (rows, added) in deleted.items():
                    counts[name] = replace(counts[name], deleted=rows)
                    extra[name] = added
        result = ErasureResult(counts)
        for name in names:
            result.notes += _erasure_notes(name, self._source(name), plan[name].method, scans[name],
                                           extra.get(name, 0), apply)
        return result

    def _source(self, name: str) -> str:
        index = self.tables[name]["index"]
        if index is None:
            return f"the pattern {self.tables[name]['pattern']}"
        return f"the index {index['store']}.{index['table']}"

    def _scan(self, name: str, root: Path, subject: Subject) -> _Scan:
        """The subject's files of one table, classified as collect would: listed (one per index row),
        missing, refused (outside the root: never deleted), with other names (hard links)."""
        scan = _Scan()
        index = self.tables[name]["index"]
        if index is None:
            values, scan.unknown = self._identity_values(_placeholders(self.tables[name]["pattern"]), subject)
            for relative, _match in _pattern_matches(self.tables[name]["pattern"], values, root):
                scan.add(relative, relative, root)
            return scan
        sql = self._sql(index["store"])
        t = self._index_table(sql, index)
        key = t.c[index["key"]] if index["key"] in t.c else t.c[index["path_column"]]
        scan.key, scan.indexed = key.name, True
        stmt = (select(t.c[index["path_column"]], key).where(self._membership(sql, t, index, subject))
                .order_by(key))
        try:
            with sql.engine.connect() as conn:
                for part in conn.execution_options(yield_per=int(self.connection["batch_size"])) \
                        .execute(stmt).partitions():
                    for path, ref in part:
                        scan.add(path, ref, root)
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"store {index['store']} (index of {self.store.name}.{name}): "
                                   f"{exc.__class__.__name__}: {exc}") from exc
        return scan

    def _unlink_all(self, name: str, root: Path, subject: Subject) -> int:
        """Phase 1: unlink the subject's files of one table (listed again, so a file added since the
        count goes too), then fsync their folders. Returns the files handled (unlinked or gone)."""
        index = self.tables[name]["index"]
        folders: set[Path] = set()
        done = 0
        if index is None:
            values, _unknown = self._identity_values(_placeholders(self.tables[name]["pattern"]), subject)
            for relative, _match in _pattern_matches(self.tables[name]["pattern"], values, root):
                done += self._unlink_one(relative, root, folders) is not None
        else:
            sql = self._sql(index["store"])
            t = self._index_table(sql, index)
            stmt = select(t.c[index["path_column"]]).where(self._membership(sql, t, index, subject))
            try:
                with sql.engine.connect() as conn:
                    for part in conn.execution_options(yield_per=int(self.connection["batch_size"])) \
                            .execute(stmt).scalars().partitions():
                        for value in part:
                            done += self._unlink_one(value, root, folders) is not None
            except SQLAlchemyError as exc:
                raise StoreUnavailable(f"store {index['store']} (index of {self.store.name}.{name}): "
                                       f"{exc.__class__.__name__}: {exc}") from exc
        _sync_folders(folders)
        return done

    def _unlink_one(self, value: Any, root: Path, folders: set[Path]) -> Path | None:
        """Remove one listed file: the resolved path, only inside the root (the collect path check) and
        only a regular file (never a folder, pipe or device). None: refused, never deleted."""
        if value is None or str(value).strip() == "":
            return root  # no file to remove; the row goes
        path = _inside(root, str(value))
        if path is None:
            return None
        try:
            if path.is_file() and _unlink_blob(path):
                folders.add(path.parent)
        except OSError as exc:
            raise StoreUnavailable(f"store {self.store.name}: cannot delete {value}: {exc.strerror or exc}") from exc
        return path

    def _delete_rows(self, store: str, names: Sequence[str], root: Path, subject: Subject,
                     scans: Mapping[str, _Scan]) -> dict[str, tuple[int, int]]:
        """Phase 2: one DELETE per index table of one SQL store, in one transaction. Rows whose path
        is outside the root are kept (their file was not deleted). Where the database can say which
        rows it deleted (RETURNING), a row added after phase 1 has its file unlinked before the commit,
        so no blob outlives its row. Returns per table (rows deleted, of those added meanwhile)."""
        sql = self._sql(store)
        out: dict[str, tuple[int, int]] = {}
        folders: set[Path] = set()
        returning = bool(sql.engine.dialect.delete_returning)
        try:
            with sql.engine.connect() as conn, conn.begin() as tx:
                for name in names:
                    index = self.tables[name]["index"]
                    t = self._index_table(sql, index)
                    path = t.c[index["path_column"]]
                    where = self._membership(sql, t, index, subject)
                    refused = sorted(scans[name].refused_paths)
                    if refused:
                        where = and_(where, or_(path.is_(None), path.not_in(refused)))
                    if not returning:
                        out[name] = (conn.execute(delete(t).where(where)).rowcount, 0)
                        continue
                    rows, added = 0, 0
                    for value in conn.execute(delete(t).where(where).returning(path)).scalars():
                        rows += 1
                        if value is None or str(value).strip() == "":
                            continue
                        resolved = _inside(root, str(value))
                        if resolved is None:  # a row outside the root added since the count: keep it
                            raise StoreUnavailable(f"store {self.store.name}.{name}: an index row pointing outside "
                                                   "the folder was added during the erasure; try again")
                        try:
                            if resolved.is_file() and _unlink_blob(resolved):
                                folders.add(resolved.parent)
                                added += 1
                        except OSError as exc:
                            raise StoreUnavailable(f"store {self.store.name}: cannot delete {value}: "
                                                   f"{exc.strerror or exc}") from exc
                    out[name] = (rows, added)
                _sync_folders(folders)
                tx.commit()
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"store {store} (index of {self.store.name}): "
                                   f"{exc.__class__.__name__}: {exc}") from exc
        return out

    # ---- the index store

    def _sql(self, store: str) -> SqlConnector:
        if self.context.connector_for is None:
            raise NotSupported(f"store {self.store.name}: no other stores are reachable for the index store {store!r}")
        try:
            connector = self.context.connector_for(store)
        except KeyError:
            raise NotSupported(f"unknown store {store!r}") from None
        if not isinstance(connector, SqlConnector):
            raise NotSupported(f"store {store!r} is a {connector.type_name} store; an index must be in a sql store")
        return connector

    def warm(self) -> None:
        """Reflect the index tables now (a worker does this before it forks its work horses, which then
        start with them known: ~0.1 s less for each job of this store). Raises StoreUnavailable."""
        for table in self.store.tables.values():
            index = table.options.get("index")
            if index is not None:
                sql = self._sql(index["store"])
                self._index_table(sql, index)
                sql.warm()

    def _index_table(self, sql: SqlConnector, index: Mapping[str, Any]) -> Table:
        """The index table, reflected once (also when the SQL store's map does not list it)."""
        cache_key = (sql.store.name, index["table"])
        if cache_key not in self._index_tables:
            try:
                self._index_tables[cache_key] = Table(index["table"], MetaData(), autoload_with=sql.engine,
                                                      resolve_fks=False)
            except NoSuchTableError as exc:
                raise StoreUnavailable(f"store {sql.store.name}: no table {index['table']!r}") from exc
            except SQLAlchemyError as exc:
                raise StoreUnavailable(f"store {sql.store.name}: {exc.__class__.__name__}: {exc}") from exc
        return self._index_tables[cache_key]

    def _membership(self, sql: SqlConnector, t: Table, index: Mapping[str, Any],
                    subject: Subject) -> ColumnElement[bool]:
        """Index rows that belong to the subject, by the SQL store's own membership rules.

        With ``references`` the index table need not be in the SQL store's map (so its rows are not
        exported twice); without, the SQL store must list it and its membership is used as is.
        """
        references = _references(index)
        if not references:
            if index["table"] not in sql.store.tables:
                raise NotSupported(f"store {sql.store.name} does not list {index['table']!r}: give the index "
                                   "references to find the subject's rows")
            return sql.membership(index["table"], subject)
        tables = sql._reflect()
        conditions: list[ColumnElement[bool]] = []
        for column, (other, other_column) in references.items():
            o = tables[other]
            conditions.append(t.c[column].in_(select(o.c[other_column]).where(sql.membership(other, subject))))
        return or_(*conditions) if conditions else false()

    def _identity_values(self, kinds: Sequence[str], subject: Subject) -> tuple[list[dict[str, str]], list[str]]:
        """Every combination of the subject's values for the placeholders; and the kinds not known."""
        options: dict[str, list[str]] = {}
        unknown = []
        for kind in dict.fromkeys(kinds):
            values = [subject.identities[kind]] if kind in subject.identities else self._lookup(kind, subject)
            values = [v for v in values if _usable(v)]
            if values:
                options[kind] = sorted(set(values))
            else:
                unknown.append(kind)
        if unknown:
            return [], unknown
        keys = list(options)
        return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*options.values())], []

    def _lookup(self, kind: str, subject: Subject) -> list[str]:
        source = self.connection["identities_from"]
        if source is None:
            return []
        sql = self._sql(source)
        ident = sql.store.identities.get(kind)
        if ident is None:
            return []
        t = sql._reflect()[ident["table"]]
        stmt = select(t.c[ident["column"]]).where(sql.membership(ident["table"], subject)).distinct()
        try:
            with sql.engine.connect() as conn:
                return [str(v) for v in conn.execute(stmt).scalars() if v is not None]
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"store {source}: {exc.__class__.__name__}: {exc}") from exc


# --- helpers -------------------------------------------------------------------------------------

def _sql_store(path: str, name: str, stores: Mapping[str, Store]) -> list[tuple[str, str]]:
    other = stores.get(name)
    if other is None:
        return [(path, f"unknown store {name!r}")]
    if other.connector != "sql":
        return [(path, f"store {name!r} is a {other.connector} store, not a sql store")]
    return []


def _index_links(path: str, index: Mapping[str, Any], stores: Mapping[str, Store]) -> list[tuple[str, str]]:
    problems = _sql_store(f"{path}.store", index["store"], stores)
    if problems:
        return problems
    other = stores[index["store"]]
    references = _references(index)
    if not references and index["table"] not in other.tables:
        return [(f"{path}.references", f"store {index['store']!r} does not list table {index['table']!r}: "
                 "give references (column -> table.column of that store) to find the subject's rows")]
    return [(f"{path}.references.{column}", f"unknown table {target!r} in store {index['store']!r}")
            for column, (target, _col) in references.items() if target not in other.tables]


def _pattern_matches(pattern: str, values: Iterable[Mapping[str, str]], root: Path) -> Iterator[tuple[str, Path]]:
    """The files a pattern finds for the subject's values (glob-escaped), each once, as (path relative
    to root, the match); collect and erase share it, so both see the same files."""
    seen: set[str] = set()
    for combination in values:
        found = sorted(root.glob(pattern.format(**{k: glob.escape(v) for k, v in combination.items()})))
        for match in found:
            relative = match.relative_to(root).as_posix()
            if relative in seen or match.is_dir():
                continue
            seen.add(relative)
            yield relative, match


def _inside(root: Path, value: str) -> Path | None:
    """``value`` (relative to root, or absolute) resolved with its symlinks; None unless inside root."""
    if "\x00" in value:
        return None
    try:
        candidate = (root / value).resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return None
    if candidate != root and candidate.is_relative_to(root):
        return candidate
    return None


def _is_file(path: Path | None) -> bool:
    return path is not None and path.is_file()


def _usable(value: str) -> bool:
    """An identity value that can be put into a path: one name, never a way out of the folder."""
    return bool(value) and value not in (".", "..") and not any(c in value for c in "/\\\x00")


def _modified(path: Path) -> datetime | None:
    try:
        return datetime.fromtimestamp(path.stat().st_mtime, tz=UTC)
    except OSError:
        return None


def _renamed(columns: Iterable[str]) -> list[str]:
    """Index columns in the metadata table; one named like ours gets an ``index_`` prefix."""
    return [f"index_{c}" if c in FILE_COLUMNS else c for c in columns]


def _notes(table: str, source: str, key: str, tally: _Tally) -> list[str]:
    notes = []
    if tally.missing:
        n = len(tally.missing)
        notes.append(f"{table}: {n} file{'s' if n != 1 else ''} listed in {source} {'are' if n != 1 else 'is'} "
                     f"missing ({key} {_listed(tally.missing)})")
    if tally.refused:
        n = len(tally.refused)
        notes.append(f"{table}: {n} path{'s' if n != 1 else ''} in {source} point{'' if n != 1 else 's'} outside "
                     f"the store's folder and {'were' if n != 1 else 'was'} not read ({key} {_listed(tally.refused)}); "
                     "check the index for tampering")
    return notes


def _listed(refs: list[Any], limit: int = 10) -> str:
    shown = ", ".join(str(r) for r in refs[:limit])
    return shown + (f" and {len(refs) - limit} more" if len(refs) > limit else "")


def _planned(step: TableErasure, scan: _Scan) -> ErasureCount:
    """The counts, in files, before anything changes: refused paths are kept (counted as retained)."""
    if step.method == "delete":
        return ErasureCount(found=scan.found, deleted=scan.found - len(scan.refused), retained=len(scan.refused))
    return ErasureCount(found=scan.found, retained=scan.found)


def _erasure_notes(table: str, source: str, method: str, scan: _Scan, added: int, apply: bool) -> list[str]:
    """For the DPO: references (keys) and counts only, never a path's content."""
    notes = []
    if scan.unknown:
        notes.append(f"{table}: not searched: the subject's {', '.join(scan.unknown)} is not known ({source}); "
                     "a person must look for the subject's files")
    if scan.missing:
        n = len(scan.missing)
        was = ("were" if n != 1 else "was") if apply else "would be"
        gone = f"; {'their' if n != 1 else 'its'} index row{'s' if n != 1 else ''} {was} deleted" \
            if method == "delete" and scan.indexed else ""
        notes.append(f"{table}: {_plural(n, 'file')} listed in {source} {'are' if n != 1 else 'is'} missing "
                     f"({scan.key} {_listed(scan.missing)}){gone}")
    if scan.refused:
        n = len(scan.refused)
        what, where = ("the file nor its index row", "the index") if scan.indexed else ("the link nor its target",
                                                                                       "the folder")
        notes.append(f"{table}: {_plural(n, 'path')} in {source} point{'' if n != 1 else 's'} outside the store's "
                     f"folder ({scan.key} {_listed(scan.refused)}): neither {what} {'was' if apply else 'would be'} "
                     f"erased (counted as retained); check {where} for tampering, a person must erase them")
    if scan.linked and method == "delete":
        n = len(scan.linked)
        notes.append(f"{table}: {_plural(n, 'file')} {'have' if n != 1 else 'has'} other names (hard links) "
                     f"({scan.key} {_listed(scan.linked)}): deleting removes this name; the content stays under "
                     "the others")
    if added:
        notes.append(f"{table}: {_plural(added, 'file')} added during the erasure {'were' if added != 1 else 'was'} "
                     f"deleted with {'their' if added != 1 else 'its'} index row{'s' if added != 1 else ''}")
    if method == "retain" and scan.found:
        notes.append(f"{table}: {_plural(scan.found, 'file')} of the subject kept as they are (erasure method retain)")
    return notes


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"

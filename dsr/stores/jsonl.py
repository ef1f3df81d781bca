"""Line-delimited JSON log files (web server and API logs): the lines that name the subject.

A store is a folder and a glob inside it (``access.log*``). Every matching file is read, the oldest
rotation first (``access.log.2.gz``, ``access.log.1``, then the live ``access.log``; dated
rotations such as ``access.log-20260105.gz`` by date), compressed ones (``.gz``, ``.bz2``, ``.xz``)
transparently, line by line: never a whole file in memory, and no line longer than
``max_line_bytes``. A line belongs to the subject when any configured identity field (a key, or a
dotted path into the object such as ``user.email``) holds the subject's value for that identity:
e-mail addresses case-insensitively, IP addresses in any notation, others exactly. Lines that are
not JSON objects are counted per file, reported in the notes and skipped; one bad line never fails
the store.

``link_fields`` (e.g. an analytics cookie's visitor ID) tie lines together: a value such a field
holds on one of the subject's lines makes the lines without any identity (before a login) that hold
it the subject's too, unless the value also occurs on a line of someone else (a shared browser):
then it identifies no one person and is not followed (Art. 15(4)). That takes two more passes
over the files, still line by line (the second parses only lines holding one of the subject's
values), and keeps only the subject's values in memory.

A store has one table: the subject's lines, as rows, written in batches. Its columns are
``log_file`` and ``log_line`` (where the line came from), then the table's ``columns`` option if
given, else the keys of the first batch of matching lines in the order they appear, then
``extra``: the keys outside the columns, as JSON. Every field the data map has a rule for is
always a column of its own, so a masked or omitted field never hides inside ``extra``. Nested
objects and lists are written as JSON text.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import ipaddress
import json
import lzma
import os
import re
import stat
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any, Protocol

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates

from dsr.datamap.model import Store, Table
from dsr.stores.base import (
    CollectResult,
    ColumnKind,
    Connector,
    ConnectorContext,
    ErasureCount,
    ErasureResult,
    JsonText,
    Progress,
    StoreUnavailable,
    Subject,
    TableErasure,
    TableSink,
    TableWriter,
    TooMany,
    refuse_dated,
    register,
)

FILE_COLUMN, LINE_COLUMN, EXTRA_COLUMN = "log_file", "log_line", "extra"
RESERVED = (FILE_COLUMN, LINE_COLUMN, EXTRA_COLUMN)
SAMPLE_LINES = 200  # lines ``check`` reads to see that a store holds JSON lines with the mapped fields

_OPENERS: dict[str, Any] = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
# Erasure writes a rewritten file as this hidden temporary beside it, then renames it over the file.
TEMP_PREFIX = ".dsr-erase-"
# A temporary file no rewrite has written to for this long was left by a killed worker: erasure removes
# it (it holds a copy of other people's lines, which the logs' retention would never delete).
STALE_TEMP_SECONDS = 3600
TAIL_ROUNDS = 100  # times a rewrite reads lines appended meanwhile before it gives up (retried later)
# Compressed with something the standard library cannot read: listed in the notes, never guessed at.
_UNREADABLE = {".zst": "zstd", ".lz4": "lz4", ".zip": "zip", ".7z": "7-Zip", ".br": "brotli", ".Z": "compress"}
# What a damaged compressed file raises part way through (truncated while rotating, bad data).
_DAMAGED = (EOFError, zlib.error, lzma.LZMAError, gzip.BadGzipFile, OSError)

_NUMBERED = re.compile(r"^(?P<base>.+)\.(?P<n>\d{1,6})$")  # access.log.1, access.log.2(.gz)
_DATED = re.compile(r"^(?P<base>.+?)[-_.](?P<date>\d{4}-?\d{2}-?\d{2}(?:[-_T]?\d{2,6})?)$")  # access.log-20260105
_DOTTED = validate.Regexp(r"^[^.\s]+(\.[^.\s]+)*$", error="must be a key or a dotted path such as user.email "
                          "(got {input})")


class _Connection(Schema):
    class Meta:
        unknown = RAISE

    path = fields.String(required=True, validate=validate.Length(min=1))  # the folder; relative to the instance
    pattern = fields.String(load_default="*", validate=validate.Length(min=1))  # glob inside it
    batch_size = fields.Integer(load_default=1000, validate=validate.Range(min=1))
    max_line_bytes = fields.Integer(load_default=1024 * 1024, validate=validate.Range(min=1024))
    # Fields whose value, seen on a line of the subject, also makes lines without an identity theirs.
    link_fields = fields.List(fields.String(validate=_DOTTED), load_default=list)
    # Parse only lines that hold one of the subject's values as written (see _needle); false for a
    # log whose writer escapes plain letters or digits in JSON strings.
    prefilter = fields.Boolean(load_default=True)

    @validates("pattern")
    def _relative(self, value: str, **_: Any) -> None:
        if value.startswith("/") or ".." in PurePosixPath(value).parts:
            raise ValidationError("must be a glob inside the folder (no leading / and no ..)")


class _Identity(Schema):
    class Meta:
        unknown = RAISE

    field = fields.String(required=True, validate=_DOTTED)


class _TableOptions(Schema):
    class Meta:
        unknown = RAISE

    # The data columns in this order; the line's other keys go into ``extra``.
    columns = fields.List(fields.String(validate=validate.Length(min=1)), load_default=None,
                          validate=validate.Length(min=1, error="list at least one column, or leave columns out"))

    @validates("columns")
    def _distinct(self, value: list[str] | None, **_: Any) -> None:
        if not value:
            return
        reserved = sorted(set(value) & set(RESERVED))
        if reserved:
            raise ValidationError(f"{', '.join(reserved)} are added by the connector; do not list them")
        doubled = sorted({c for c in value if value.count(c) > 1})
        if doubled:
            raise ValidationError(f"listed twice: {', '.join(doubled)}")


class _Matcher:
    """One identity of the subject, looked up in one field of a line."""

    def __init__(self, kind: str, path: str, value: str) -> None:
        self.kind, self.path, self.value = kind, path, _normalise(kind, value)
        self.parts = tuple(path.split("."))

    def matches(self, record: Mapping[str, Any]) -> bool:
        found = _lookup(record, self.path, self.parts)
        return found is not _MISSING and _equal(self.kind, found, self.value)

    @property
    def needle(self) -> bytes | None:
        """What a line holding this identity must contain (lower-cased), or None when its forms vary
        too much to search for (an IPv6 address in another notation)."""
        if self.kind == "ip_address" and ":" in self.value:
            return None
        return _needle(self.value)  # an IPv4 address also stands so inside its IPv4-mapped IPv6 form


_MISSING = object()
# Characters that some JSON writers escape (quotes, backslash, slash, and <>&' for HTML safety): a
# value holding one may stand escaped in the raw line, so it is never searched for as bytes.
_ESCAPED_BY_SOME = frozenset('"\\/<>&\'')


def _needle(text: str) -> bytes | None:
    """A value as it stands in a raw JSON line, lower-cased, to skip lines without it unparsed;
    None when a writer could have escaped it (not printable ASCII, or one of _ESCAPED_BY_SOME)."""
    if not text or not (text.isascii() and text.isprintable()) or _ESCAPED_BY_SOME.intersection(text):
        return None
    return text.lower().encode()


def _needles(values: Iterator[bytes | None] | list[bytes | None]) -> tuple[bytes, ...] | None:
    """All needles, or None (parse every line) if any value cannot be searched for as bytes."""
    found = list(values)
    return None if any(n is None for n in found) else tuple(n for n in found if n is not None)


def _lookup(record: Mapping[str, Any], path: str, parts: Sequence[str] | None = None) -> Any:
    """The value at a key, or at a dotted path into nested objects (a literal key with dots wins)."""
    if path in record:
        return record[path]
    value: Any = record
    for part in parts if parts is not None else path.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _normalise(kind: str, value: str) -> str:
    value = value.strip()
    if kind == "email":
        return value.lower()
    if kind == "ip_address":
        return _canonical_ip(value) or value
    return value


def _canonical_ip(text: str) -> str | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return str(address.ipv4_mapped)
    return str(address)


def _equal(kind: str, found: Any, wanted: str) -> bool:
    if isinstance(found, list):  # e.g. "emails": [...], "forwarded_for": [...]
        return any(_equal(kind, item, wanted) for item in found)
    if found is None or isinstance(found, dict | bool):
        return False
    text = found.strip() if isinstance(found, str) else str(found)
    if kind == "email":
        return text.lower() == wanted
    if kind == "ip_address":  # "2001:db8::1" and "2001:0db8:0:0::1" are one address
        return text == wanted or (":" in text and _canonical_ip(text) == wanted)
    return text == wanted


def _cell(value: Any) -> Any:
    # Booleans and numbers go as they are (the CSV writes true/false): the JSON twin keeps their types.
    if isinstance(value, dict | list):
        return JsonText(json.dumps(value, ensure_ascii=False))
    return value


class _Layout:
    """The table's columns, and how a line becomes a row."""

    def __init__(self, keys: Sequence[str]) -> None:
        self.keys = tuple(keys)
        self._known = frozenset(self.keys)

    @property
    def columns(self) -> list[str]:
        return [FILE_COLUMN, LINE_COLUMN, *self.keys, EXTRA_COLUMN]

    @property
    def kinds(self) -> list[ColumnKind]:
        """A field's values keep the JSON types they have in the lines ("any")."""
        fields: list[ColumnKind] = ["any"] * len(self.keys)
        return ["string", "integer", *fields, "json"]

    def row(self, file: str, number: int, record: Mapping[str, Any]) -> list[Any]:
        rest = {k: v for k, v in record.items() if k not in self._known}
        return [file, number, *(_cell(record.get(k)) for k in self.keys),
                JsonText(json.dumps(rest, ensure_ascii=False)) if rest else None]

    @classmethod
    def of(cls, table: Table, configured: Sequence[str] | None, sample: Sequence[Mapping[str, Any]]) -> _Layout:
        keys: dict[str, None] = {}
        if configured:
            keys.update(dict.fromkeys(configured))
        else:
            for record in sample:
                keys.update(dict.fromkeys(k for k in record if k not in keys))
        # A field with a rule (mask, omit, own category) is always a column, so the rule applies to it.
        keys.update(dict.fromkeys(f for f in table.fields if f not in keys))
        return cls([k for k in keys if k not in RESERVED])


class _Links:
    """Values of the link fields on the subject's lines (``own``), and those of them also seen on a
    line that names someone else by an identity field (``foreign``). A line without any identity
    belongs to the subject when it holds an own value that is not foreign. Both sets hold only the
    subject's values, so memory does not grow with the store."""

    def __init__(self, fields: Sequence[str], identity_fields: Sequence[str]) -> None:
        self.fields = [(f, tuple(f.split("."))) for f in fields]
        self.identity_fields = [(f, tuple(f.split("."))) for f in identity_fields]
        self.own: dict[str, str] = {}  # "field=value" -> the value as text
        self.foreign: set[str] = set()

    def values(self, record: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
        for path, parts in self.fields:
            value = _lookup(record, path, parts)
            if isinstance(value, str | int) and not isinstance(value, bool) and str(value).strip():
                text = str(value).strip()
                yield f"{path}={text}", text

    def anonymous(self, record: Mapping[str, Any]) -> bool:
        return all(_lookup(record, path, parts) in (_MISSING, None, "") for path, parts in self.identity_fields)

    def needles(self) -> tuple[bytes, ...] | None:
        """The own values as they stand in a raw line, or None (parse every line)."""
        return _needles([_needle(text) for text in self.own.values()])

    def holds(self, record: Mapping[str, Any]) -> bool:
        return self.anonymous(record) and any(key in self.own and key not in self.foreign
                                              for key, _text in self.values(record))

    def notes(self, linked: int) -> list[str]:
        names = ", ".join(f for f, _ in self.fields)
        shared = len(self.foreign)
        notes = [f"{_plural(linked, 'line')} without a login found through {names}: "
                 f"{_plural(len(self.own) - shared, 'value')} seen on the subject's own lines"]
        if shared:
            notes.append(f"{_plural(shared, 'value')} of {names} also seen with someone else (a shared device?) "
                         f"{'was' if shared == 1 else 'were'} not followed: lines with only such a value are "
                         "not in the answer")
        return notes


IDENTITY, LINKED = 1, 2  # how a line is the subject's: it names them, or it is linked to their lines


@dataclass(frozen=True)
class _Selection:
    """The subject's lines: those an identity matches, then those without one that ``links`` ties
    to them. Collect, preview and erase all ask this one object, so they agree line for line."""

    matchers: list[_Matcher]
    links: _Links | None
    needles: tuple[bytes, ...] | None  # what a subject's raw line must contain (None: parse every line)

    def kind(self, record: Mapping[str, Any]) -> int:
        """IDENTITY, LINKED, or 0 (not the subject's)."""
        if any(m.matches(record) for m in self.matchers):
            return IDENTITY
        if self.links is not None and self.links.holds(record):
            return LINKED
        return 0


@dataclass
class _FileStats:
    name: str
    lines: int = 0
    malformed: int = 0
    too_long: int = 0
    damaged: str | None = None
    links: int = 1  # names of the file (hard links), seen by erasure
    owner_lost: bool = False  # a rewrite could not give the file back its owner


@dataclass
class _Tally:
    """The subject's lines of one kind in one file: found, and deleted or changed by the plan."""

    found: int = 0
    touched: int = 0


class _Edit:
    """What the plan does to one of the subject's lines: ``apply`` returns None (delete it), the
    line itself (keep it), or the line with the plan's fields set to null or their replacement."""

    def __init__(self, todo: TableErasure) -> None:
        if todo.method not in ("delete", "null", "retain"):
            raise ValueError(f"unknown erasure method {todo.method!r}")
        self.method, self.fields, self.replacements = todo.method, todo.fields, todo.replacements

    def apply(self, line: bytes, record: dict[str, Any]) -> bytes | None:
        if self.method == "delete":
            return None
        changed = False
        if self.method == "null":
            for path in self.fields:
                slot = _slot(record, path)
                if slot is None:
                    continue  # a line without the field keeps not having it
                container, key = slot
                value = self.replacements.get(path)
                if not (type(container[key]) is type(value) and container[key] == value):
                    container[key] = value
                    changed = True
        # Unchanged lines stay byte-identical, so a second erasure rewrites nothing.
        return _serialise(record, line) if changed else line


def _slot(record: dict[str, Any], path: str) -> tuple[dict[str, Any], str] | None:
    """Where ``path`` (a key, or a dotted path as in _lookup) is in the record, or None."""
    if path in record:
        return record, path
    *parents, last = path.split(".")
    value: Any = record
    for part in parents:
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return (value, last) if isinstance(value, dict) and last in value else None


def _serialise(record: dict[str, Any], like: bytes) -> bytes:
    """A changed line as JSON again, in the style of the line it replaces as far as it shows (compact
    or spaced separators, escaped non-ASCII), with the same line ending."""
    ending = b"\r\n" if like.endswith(b"\r\n") else b"\n" if like.endswith(b"\n") else b""
    colon = like.find(b'":')
    compact = colon >= 0 and like[colon + 2:colon + 3] != b" "
    text = json.dumps(record, ensure_ascii=b"\\u" in like, separators=(",", ":") if compact else (", ", ": "))
    return text.encode() + ending


class _Out(Protocol):
    def write(self, data: bytes, /) -> int: ...

    def close(self) -> None: ...


class _Rewrite:
    """A file's replacement, written as a temporary file in the same folder and compression. ``commit``
    makes it the file: same permissions, owner (where allowed) and times, fsync, ``os.replace``, fsync
    of the folder. Until the rename the file is the old one, after it the new one; a rewrite left
    without ``commit`` removes its temporary file.

    The times are kept so a retention by age (``find -mtime``, logrotate ``maxage``) does not take the
    erasure for new data and keep the other lines longer."""

    def __init__(self, path: Path, source: os.stat_result) -> None:
        self.path, self.owner_lost, self._done = path, False, False
        fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".tmp", dir=path.parent)
        self.temp = Path(name)
        self.raw = os.fdopen(fd, "wb")
        self.out: _Out = _compressor(path, self.raw, source)

    def write(self, data: bytes) -> None:
        self.out.write(data)

    def commit(self, source: os.stat_result) -> tuple[int, int]:
        if self.out is not self.raw:
            self.out.close()  # writes the compressed stream's end; the raw file stays open
        self.raw.flush()
        fd = self.raw.fileno()
        os.fchmod(fd, stat.S_IMODE(source.st_mode))
        if (source.st_uid, source.st_gid) != (os.geteuid(), os.getegid()):
            try:
                os.fchown(fd, source.st_uid, source.st_gid)
            except PermissionError:
                self.owner_lost = True
        os.utime(fd, ns=(source.st_atime_ns, source.st_mtime_ns))
        os.fsync(fd)
        info = os.fstat(fd)
        self.raw.close()
        self.temp.replace(self.path)  # os.replace: atomic within the folder
        self._done = True
        _fsync_folder(self.path.parent)
        return info.st_dev, info.st_ino

    def __enter__(self) -> _Rewrite:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._done:
            with contextlib.suppress(Exception):
                self.out.close()
            self.raw.close()
            self.temp.unlink(missing_ok=True)


def _compressor(path: Path, raw: IO[bytes], source: os.stat_result) -> _Out:
    """A writer in the compression the file's name says (as ``_open`` reads it), onto ``raw``."""
    if path.suffix == ".gz":  # level 6 as gzip and logrotate use; the header names the file as gzip does
        return gzip.GzipFile(filename=path.name, mode="wb", fileobj=raw, compresslevel=6, mtime=int(source.st_mtime))
    if path.suffix == ".bz2":
        return bz2.BZ2File(raw, "wb")
    if path.suffix == ".xz":
        return lzma.LZMAFile(raw, "wb")
    return raw


def _sweep(folders: set[Path]) -> int:
    """Remove the stale temporary files of interrupted rewrites in these folders; how many."""
    removed = 0
    limit = time.time() - STALE_TEMP_SECONDS
    for folder in folders:
        for temp in folder.glob(f"{TEMP_PREFIX}*.tmp"):
            with contextlib.suppress(OSError):
                if temp.lstat().st_ctime < limit:  # ctime: a rewrite sets the mtime back before the rename
                    temp.unlink()
                    removed += 1
    return removed


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable (a crash right after it could otherwise bring back the old file)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a folder
    finally:
        os.close(fd)


@dataclass
class _Scan:
    """What one collect read, for the notes."""

    files: list[_FileStats] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    filtered: bool = False  # only lines holding one of the subject's values were parsed

    def notes(self, folder: Path, pattern: str) -> list[str]:
        notes = []
        names = [f.name for f in self.files]
        shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        total = sum(f.lines for f in self.files)
        if names:
            notes.append(f"searched {_plural(len(names), 'file')} ({_plural(total, 'line')}) in {folder} "
                         f"matching {pattern!r}, oldest first: {shown}")
        else:
            notes.append(f"no file in {folder} matches {pattern!r}: there were no log lines to search")
        for f in self.files:
            if f.malformed:
                verb = "holds" if f.malformed == 1 else "hold"
                which = f" that {verb} one of the subject's values" if self.filtered else ""
                notes.append(f"{_plural(f.malformed, 'line')} in {f.name}{which} "
                             f"{'is' if f.malformed == 1 else 'are'} not JSON and "
                             f"{'was' if f.malformed == 1 else 'were'} skipped")
            if f.too_long:
                notes.append(f"{_plural(f.too_long, 'line')} in {f.name} "
                             f"{'is' if f.too_long == 1 else 'are'} too long to read and "
                             f"{'was' if f.too_long == 1 else 'were'} skipped")
            if f.damaged:
                notes.append(f"{f.name} is damaged after line {f.lines} ({f.damaged}); the rest of it was not read")
        notes += self.skipped
        return notes


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


@register
class JsonlConnector(Connector):
    type_name = "jsonl"
    connection_schema = _Connection
    identity_schema = _Identity
    table_schema = _TableOptions

    def __init__(self, store: Store, context: ConnectorContext) -> None:
        super().__init__(store, context)
        self.options: dict[str, Any] = _Connection().load(dict(self.store.connection))
        self.fields: dict[str, str] = {kind: _Identity().load(dict(spec))["field"]
                                       for kind, spec in store.identities.items()}
        self.table_name, self.table = next(iter(store.tables.items()))
        self.columns: list[str] | None = _TableOptions().load(dict(self.table.options))["columns"]

    @classmethod
    def validate(cls, store: Store) -> list[tuple[str, str]]:
        problems = super().validate(store)
        base = f"stores.{store.name}"
        if len(store.tables) != 1:
            problems.append((f"{base}.tables", f"a jsonl store has exactly one table (all matching lines go there), "
                                               f"not {len(store.tables)}; use one store per log"))
        if not store.identities:
            problems.append((f"{base}.identities", "names no way to find a subject (e.g. email: {field: user})"))
        return problems

    # --- the folder and its files ------------------------------------------------------------

    @property
    def folder(self) -> Path:
        path = Path(self.options["path"]).expanduser()
        return path if path.is_absolute() else self.context.instance_dir / path

    def _open_folder(self) -> Path:
        folder = self.folder
        if not folder.exists():
            raise StoreUnavailable(f"store {self.store.name}: no folder {folder}")
        if not folder.is_dir():
            raise StoreUnavailable(f"store {self.store.name}: {folder} is not a folder")
        if not os.access(folder, os.R_OK | os.X_OK):
            raise StoreUnavailable(f"store {self.store.name}: cannot read the folder {folder}")
        return folder

    def files(self) -> list[Path]:
        """The files to read, oldest first (raises ``StoreUnavailable`` without a readable folder)."""
        return list(self._listing())

    def _listing(self) -> dict[Path, tuple[int, int]]:
        """The files to read, oldest first, each with its identity (device, inode) when listed."""
        folder = self._open_folder()
        found: dict[Path, tuple[int, int]] = {}
        try:
            for path in folder.glob(self.options["pattern"]):
                try:
                    info = path.stat()
                except FileNotFoundError as exc:
                    if path.is_symlink():
                        continue  # a dangling link holds no lines
                    raise StoreUnavailable(f"store {self.store.name}: {path.name} disappeared while {folder} "
                                           "was listed (rotated?); try again") from exc
                if stat.S_ISREG(info.st_mode) and not path.name.startswith(TEMP_PREFIX):
                    found[path] = (info.st_dev, info.st_ino)
        except OSError as exc:
            raise StoreUnavailable(f"store {self.store.name}: cannot list {folder}: {exc}") from exc
        return {p: found[p] for p in sorted(found, key=lambda p: _rotation_key(p.relative_to(folder)))}

    def _records(self, path: Path, stats: _FileStats, identity: tuple[int, int] | None = None,
                 containing: Sequence[bytes] | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
        """(line number, object) for each JSON object line of one file; counts what it skips.

        With ``identity``, the file must still be the one listed: a log rotated in between would
        otherwise be read twice or not at all, so the store is unavailable until it is read again.
        With ``containing``, only lines holding one of these (lower-case) byte strings, in any letter
        case, are parsed at all: the rest cannot name the subject."""
        limit = int(self.options["max_line_bytes"])
        rotated = StoreUnavailable(f"store {self.store.name}: {stats.name} was rotated while the logs were read; "
                                   "try again")
        try:
            stream = _open(path)
        except FileNotFoundError as exc:
            raise rotated from exc
        except OSError as exc:
            raise StoreUnavailable(f"store {self.store.name}: cannot open {stats.name}: {exc}") from exc
        if identity is not None:
            info = os.fstat(stream.fileno())
            if (info.st_dev, info.st_ino) != identity:
                stream.close()
                raise rotated
        with stream:
            lines = _lines(stream, limit)
            while True:
                try:
                    item = next(lines)
                except StopIteration:
                    return
                except _DAMAGED as exc:
                    stats.damaged = f"{exc.__class__.__name__}: {exc}"
                    return
                number, line = item
                stats.lines = number
                if line is None:
                    stats.too_long += 1
                    continue
                record = _parse(line, stats, containing)
                if record is not None:
                    yield number, record

    # --- the contract ------------------------------------------------------------------------

    def matchers(self, subject: Subject) -> list[_Matcher]:
        return [_Matcher(kind, path, subject.identities[kind])
                for kind, path in self.fields.items() if subject.identities.get(kind)]

    def collect(self, subject: Subject, sink: TableSink, progress: Progress | None = None) -> CollectResult:
        listing = self._listing()
        files = list(listing)
        folder = self.folder
        matchers = self.matchers(subject)
        batch = int(self.options["batch_size"])
        result = CollectResult()
        scan = _Scan()
        layout: _Layout | None = None
        writer: TableWriter | None = None
        pending: list[tuple[str, int, dict[str, Any]]] = []
        count = 0

        def flush() -> None:
            nonlocal layout, writer, count
            if writer is None:
                layout = _Layout.of(self.table, self.columns, [r for _f, _n, r in pending])
                writer = sink.open_table(self.table_name, layout.columns, layout.kinds)
            assert layout is not None
            if pending:
                writer.write([layout.row(*p) for p in pending])
                count += len(pending)
                pending.clear()

        selection = self._selection(listing, matchers)
        links, needles = selection.links, selection.needles
        linked = 0
        scan.filtered = needles is not None
        try:
            if matchers:
                for path in files:
                    name = path.relative_to(folder).as_posix()
                    unreadable = _UNREADABLE.get(path.suffix)
                    if unreadable:
                        scan.skipped.append(f"{name} is compressed with {unreadable}, which dsr cannot read; "
                                            "it was not searched")
                        continue
                    stats = _FileStats(name)
                    scan.files.append(stats)
                    for number, record in self._records(path, stats, listing[path], needles):
                        kind = selection.kind(record)
                        if not kind:
                            continue
                        pending.append((name, number, record))
                        linked += kind == LINKED
                        if len(pending) >= batch:
                            flush()
            flush()
        finally:
            if writer is not None:
                writer.close()
        result.found[self.table_name] = count
        if matchers:
            result.notes += scan.notes(folder, self.options["pattern"])
            if links is not None:
                result.notes += links.notes(linked)
        else:
            known = ", ".join(sorted(self.fields)) or "none"
            result.notes.append(f"the subject is known by none of the identities this store is searched by "
                                f"({known}); its {_plural(len(files), 'file')} were not searched")
        return result

    def _selection(self, listing: dict[Path, tuple[int, int]], matchers: list[_Matcher]) -> _Selection:
        """Which lines are the subject's, for collect and erasure alike (the link passes run here)."""
        links = self._links(listing, matchers) if matchers and self.options["link_fields"] else None
        needles = self._needles(matchers)
        if needles is not None and links is not None and links.own:
            extra = links.needles()
            needles = None if extra is None else needles + extra
        return _Selection(matchers, links, needles)

    def _links(self, listing: dict[Path, tuple[int, int]], matchers: list[_Matcher]) -> _Links:
        """Before the export: the link values on the subject's lines (one pass), then which of them
        also occur with someone else (a second pass that parses only lines holding one of them)."""
        links = _Links(self.options["link_fields"], list(self.fields.values()))
        readable = {p: i for p, i in listing.items() if p.suffix not in _UNREADABLE}
        mine = self._needles(matchers)
        for path, identity in readable.items():
            stats = _FileStats(path.relative_to(self.folder).as_posix())
            for _number, record in self._records(path, stats, identity, mine):
                if any(m.matches(record) for m in matchers):
                    links.own.update(links.values(record))
        if not links.own:
            return links
        needles = links.needles() if self.options["prefilter"] else None
        for path, identity in readable.items():
            stats = _FileStats(path.relative_to(self.folder).as_posix())
            for _number, record in self._records(path, stats, identity, needles):
                if not links.anonymous(record) and not any(m.matches(record) for m in matchers):
                    links.foreign.update(key for key, _text in links.values(record) if key in links.own)
        return links

    def _needles(self, matchers: list[_Matcher]) -> tuple[bytes, ...] | None:
        """What a line of the subject must contain, or None to parse every line (``prefilter: false``,
        or an identity whose forms vary)."""
        return _needles([m.needle for m in matchers]) if self.options["prefilter"] else None

    # --- erasure (Art. 17) ----------------------------------------------------------------------
    # The subject's lines are exactly those collect finds (the same _Selection). A file is rewritten
    # only when it holds a line the plan deletes or changes: streamed into a temporary file beside it in
    # the same compression, every other line copied byte for byte, fsynced, then renamed over it. A
    # worker killed at any point leaves each file old or new, never half-written, and a rerun finds
    # what is left (it is idempotent): the per-file rename is the checkpoint.

    # Test seam: called with the file when a rewrite has read its source to the end, just before it
    # looks whether lines were appended meanwhile.
    before_replace: Callable[[Path], object] | None = None

    def preview(self, subject: Subject, plan: Mapping[str, TableErasure]) -> ErasureResult:
        return self._erasure(subject, plan, apply=False)

    def erase(self, subject: Subject, plan: Mapping[str, TableErasure], *, bound: int | None = None) -> ErasureResult:
        return self._erasure(subject, plan, apply=True, bound=bound)

    def _erasure(self, subject: Subject, plan: Mapping[str, TableErasure], *, apply: bool,
                 bound: int | None = None) -> ErasureResult:
        unknown = sorted(set(plan) - {self.table_name})
        if unknown:
            raise ValueError(f"store {self.store.name} has no table {', '.join(unknown)} (only {self.table_name})")
        refuse_dated(self.store.name, plan)  # a line's retain keeps it whole; a dated erasure is a person's
        result = ErasureResult()
        todo = plan.get(self.table_name)
        if todo is None:
            return result
        listing = self._listing()
        folder = self.folder
        matchers = self.matchers(subject)
        if not matchers:
            result.tables[self.table_name] = ErasureCount()
            known = ", ".join(sorted(self.fields)) or "none"
            result.notes.append(f"the subject is known by none of the identities this store is searched by "
                                f"({known}); its {_plural(len(listing), 'file')} were not searched")
            return result
        selection = self._selection(listing, matchers)
        edit = _Edit(todo)
        would = "" if apply else "would be "

        # Count first, changing nothing: this is the preview, and for erase the bound's check and the
        # list of files to rewrite (a file without a line to change is never rewritten).
        tallies: dict[tuple[Path, int], _Tally] = {}
        skipped: set[Path] = set()
        for path, identity in listing.items():
            name = path.relative_to(folder).as_posix()
            if path.suffix in _UNREADABLE:
                result.notes.append(f"{name} is compressed with {_UNREADABLE[path.suffix]}, which dsr cannot read: "
                                    "it was neither searched nor erased; a person must look at it")
                continue
            stats = _FileStats(name)
            counted, _ = self._pass(path, identity, selection, edit, (IDENTITY, LINKED), stats, write=False)
            tallies.update({(path, kind): tally for kind, tally in counted.items()})
            found = sum(t.found for t in counted.values())
            if stats.damaged:
                skipped.add(path)
                for tally in counted.values():
                    tally.touched = 0  # a damaged file is never rewritten: its unreadable rest would be lost
                if found:
                    result.notes.append(f"{name} is damaged after line {stats.lines} ({stats.damaged}): "
                                        f"{_plural(found, 'line')} of the subject in it {would}left as they are; "
                                        "a person must look at it")
            elif stats.links > 1 and any(t.touched for t in counted.values()):
                result.notes.append(f"{name} has {stats.links} names (hard links): the rewritten file replaces "
                                    "only this one, the others keep the old lines")
        touched = sum(t.touched for t in tallies.values())
        if apply and bound is not None and touched > bound:
            raise TooMany(self.store.name, touched, bound)

        rewritten: list[Path] = []
        if apply:
            swept = _sweep({folder, *(p.parent for p in listing)})
            if swept:
                result.notes.append(f"removed {_plural(swept, 'temporary file')} left by an erasure that was "
                                    "interrupted")
        if apply and touched:
            current = dict(listing)
            # Linked lines first: they are the subject's only through the link values on the subject's
            # own lines, so those lines must outlive them, or a rerun after a crash in between would no
            # longer find the linked lines left. (A file holding both is rewritten twice.)
            for kind in (LINKED, IDENTITY):
                for path in listing:
                    planned = tallies.get((path, kind))
                    if planned is None or not planned.touched or path in skipped:
                        continue
                    stats = _FileStats(path.relative_to(folder).as_posix())
                    counted, replaced = self._pass(path, current[path], selection, edit, (kind,), stats, write=True)
                    tallies[(path, kind)] = counted[kind]
                    if replaced is not None:
                        current[path] = replaced
                    if stats.owner_lost:
                        result.notes.append(f"{stats.name} was rewritten but could not be given back its owner "
                                            "(dsr does not run as root): check that its writer can still write it")
                    if path not in rewritten:
                        rewritten.append(path)

        found = sum(t.found for t in tallies.values())
        touched = sum(t.touched for t in tallies.values())
        result.tables[self.table_name] = ErasureCount(
            found=found, deleted=touched if todo.method == "delete" else 0,
            changed=touched if todo.method == "null" else 0, retained=found if todo.method == "retain" else 0)
        changing = sorted({p for (p, _k), t in tallies.items() if t.touched}, key=list(listing).index)
        if changing:
            names = [p.relative_to(folder).as_posix() for p in changing]
            shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
            result.notes.append(f"{_plural(len(names), 'file')} {'were' if apply else 'would be'} rewritten, "
                                f"each through a temporary file renamed over it: {shown}")
        for path in rewritten:
            if _rotation_key(path)[2] == 2 and path.suffix not in _OPENERS:
                result.notes.append(f"{path.relative_to(folder).as_posix()} is the live log: a program that keeps "
                                    "it open writes on into the replaced file until it reopens its logs, as after "
                                    "a rotation (e.g. nginx -s reopen)")
        if todo.method == "retain" and found:
            result.notes.append(f"{_plural(found, 'line')} of the subject kept as they are (erasure method retain)")
        return result

    def _pass(self, path: Path, identity: tuple[int, int] | None, selection: _Selection, edit: _Edit,
              kinds: Sequence[int], stats: _FileStats, *,
              write: bool) -> tuple[dict[int, _Tally], tuple[int, int] | None]:
        """One file, line by line: count the subject's lines of ``kinds`` and those ``edit`` deletes or
        changes; with ``write``, also rewrite the file so, and return its new identity.

        Lines appended to a plain file while it is rewritten are read and filtered too before the
        rename (bounded); any other change (rotated, truncated, a compressed file changed) makes the
        store unavailable with this file untouched, and the job's retry starts over. Left open: a line
        appended between the last look and the rename (microseconds) is lost, and a writer that keeps
        the file open goes on writing into the replaced file until it reopens it."""
        tallies = {kind: _Tally() for kind in kinds}
        limit = int(self.options["max_line_bytes"])
        real = path.resolve() if write else path  # a symlink's target is rewritten, the link stays
        rotated = StoreUnavailable(f"store {self.store.name}: {stats.name} changed while it was erased "
                                   "(rotated or rewritten); try again")
        try:
            before = real.stat()
            stream = _open(real)
        except FileNotFoundError as exc:
            raise rotated from exc
        except OSError as exc:
            raise StoreUnavailable(f"store {self.store.name}: cannot open {stats.name}: {exc}") from exc
        stats.links = before.st_nlink
        info = os.fstat(stream.fileno())
        if (info.st_dev, info.st_ino) != (before.st_dev, before.st_ino) or (
                identity is not None and identity != (info.st_dev, info.st_ino)):
            stream.close()
            raise rotated
        plain = real.suffix not in _OPENERS
        with stream, _Rewrite(real, before) if write else contextlib.nullcontext() as rewrite:
            spill = rewrite.write if rewrite is not None else None
            rounds = 0
            while True:
                lines = _lines(stream, limit, spill)
                while True:
                    try:
                        item = next(lines)
                    except StopIteration:
                        break
                    except _DAMAGED as exc:
                        if write:  # counted whole before, damaged now: leave it to the retry
                            raise rotated from exc
                        stats.damaged = f"{exc.__class__.__name__}: {exc}"
                        return tallies, None
                    stats.lines += 1
                    line = item[1]
                    if line is None:  # too long to be read: copied unread by ``spill``
                        continue
                    out: bytes | None = line
                    record = _parse(line, stats, selection.needles)
                    if record is not None and (kind := selection.kind(record)) in tallies:
                        tallies[kind].found += 1
                        out = edit.apply(line, record)
                        if out != line:
                            tallies[kind].touched += 1
                    if rewrite is not None and out is not None:
                        rewrite.write(out)
                if rewrite is None:
                    return tallies, None
                if self.before_replace is not None:
                    self.before_replace(real)
                try:
                    now = real.stat()
                except FileNotFoundError as exc:
                    raise rotated from exc
                if (now.st_dev, now.st_ino) != (before.st_dev, before.st_ino):
                    raise rotated
                if plain:
                    position = stream.tell()
                    if now.st_size == position:
                        break
                    rounds += 1
                    if now.st_size < position or rounds > TAIL_ROUNDS:  # truncated, or written faster than read
                        raise rotated
                    continue  # lines were appended meanwhile: read and filter them too
                if (now.st_size, now.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
                    raise rotated
                break
            new = rewrite.commit(now)
            stats.owner_lost = rewrite.owner_lost
            return tallies, new

    def check(self) -> list[str]:
        """The folder is readable, the pattern matches, and a sample of lines is JSON with the mapped fields."""
        base = f"stores.{self.store.name}"
        try:
            files = self.files()
        except StoreUnavailable as exc:
            return [f"{base}.connection.path: {str(exc).removeprefix(f'store {self.store.name}: ')}"]
        pattern = self.options["pattern"]
        if not files:
            return [f"warning: {base}.connection.pattern: no file in {self.folder} matches {pattern!r}"]
        problems: list[str] = []
        readable = []
        for path in files:
            name = path.relative_to(self.folder).as_posix()
            if path.suffix in _UNREADABLE:
                problems.append(f"warning: {base}.connection.pattern: {name} is compressed with "
                                f"{_UNREADABLE[path.suffix]}, which dsr cannot read")
            elif not os.access(path, os.R_OK):
                problems.append(f"{base}.connection.path: cannot read {name}")
            else:
                readable.append(path)
        sample, stats = self._sample(readable)
        if stats is None:
            return problems
        where = f"the first {_plural(stats.lines, 'line')} of {stats.name}"
        if stats.damaged:
            problems.append(f"{base}.connection.path: {stats.name} is damaged: {stats.damaged}")
        bad = stats.malformed + stats.too_long
        if bad and not sample:
            problems.append(f"{base}.connection.path: none of {where} is a JSON object: not a JSON lines log?")
            return problems
        if bad:
            problems.append(f"warning: {base}.connection.path: {bad} of {where} are not JSON objects "
                            "(they are skipped when collecting)")
        for kind, path_ in self.fields.items():
            if sample and not any(_lookup(r, path_) is not _MISSING for r in sample):
                problems.append(f"warning: {base}.identities.{kind}.field: none of {where} has {path_!r}")
        for link in self.options["link_fields"]:
            if sample and not any(_lookup(r, link) is not _MISSING for r in sample):
                problems.append(f"warning: {base}.connection.link_fields: none of {where} has {link!r}")
        for column in self.table.fields:
            if sample and column not in RESERVED and not any(column in r for r in sample):
                problems.append(f"warning: {base}.tables.{self.table_name}.fields.{column}: "
                                f"none of {where} has {column!r}")
        return problems

    def _sample(self, files: list[Path]) -> tuple[list[dict[str, Any]], _FileStats | None]:
        """Up to SAMPLE_LINES objects from the newest file that has lines."""
        for path in reversed(files):
            stats = _FileStats(path.relative_to(self.folder).as_posix())
            sample = []
            try:
                for _number, record in self._records(path, stats):
                    sample.append(record)
                    if stats.lines >= SAMPLE_LINES:
                        break
            except StoreUnavailable:
                continue
            if stats.lines or stats.damaged:
                return sample, stats
        return [], None


def _open(path: Path) -> IO[bytes]:
    opener = _OPENERS.get(path.suffix)
    stream: IO[bytes] = opener(path, "rb") if opener else path.open("rb")
    return stream


def _parse(line: bytes, stats: _FileStats, containing: Sequence[bytes] | None) -> dict[str, Any] | None:
    """The JSON object on one raw line, or None: blank, without any of ``containing`` (so it cannot
    be the subject's), or not a JSON object (counted as malformed)."""
    if not line.strip():
        return None
    if containing is not None:
        folded = line.lower()
        if not any(c in folded for c in containing):
            return None
    try:
        record = json.loads(line)
    except ValueError:  # JSONDecodeError, and UnicodeDecodeError for bytes that are not UTF-8
        stats.malformed += 1
        return None
    if not isinstance(record, dict):
        stats.malformed += 1
        return None
    return record


def _lines(stream: IO[bytes], limit: int,
           spill: Callable[[bytes], object] | None = None) -> Iterator[tuple[int, bytes | None]]:
    """(line number, bytes) per line; ``None`` for a line longer than ``limit``, which is skipped
    unread (its bytes go to ``spill`` piece by piece, if given: memory stays flat)."""
    number = 0
    while True:
        line = stream.readline(limit + 1)
        if not line:
            return
        number += 1
        if len(line) > limit and not line.endswith(b"\n"):
            while line and not line.endswith(b"\n"):
                if spill is not None:
                    spill(line)
                line = stream.readline(limit + 1)
            if spill is not None:
                spill(line)
            yield number, None
        else:
            yield number, line


def _rotation_key(path: PurePosixPath | Path) -> tuple[str, str, int, int, str, str]:
    """Oldest first: within one log, numbered rotations highest number first, then dated ones by date,
    then the live file; logs (and folders) by name."""
    name = path.name
    stem = name
    for suffix in (*_OPENERS, *_UNREADABLE):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    folder = path.parent.as_posix()
    if m := _NUMBERED.match(stem):
        return (folder, m["base"], 0, -int(m["n"]), "", name)
    if m := _DATED.match(stem):
        return (folder, m["base"], 1, 0, re.sub(r"\D", "", m["date"]), name)
    return (folder, stem, 2, 0, "", name)

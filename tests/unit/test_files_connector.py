"""The ``files`` connector: voicemails, recordings and attachments found through an index table in
the portal database or through a path pattern, streamed into the package with size and SHA-256.

Runs on SQLite files in tmp_path with the demo portal DB and the demo media folder
(``dsr.demo.blobs``); the expected files are always read from the DB and the folder directly.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import tracemalloc
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import Engine, insert, text

from dsr.config import DEFAULT_DATAMAP
from dsr.datamap import DataMap
from dsr.datamap.loader import DataMapError, load, parse
from dsr.datamap.model import Store
from dsr.datamap.model import Table as MapTable
from dsr.db import make_engine
from dsr.demo import blobs, portal
from dsr.exports.csv_files import CsvDirectorySink
from dsr.exports.disclosure import DisclosingSink
from dsr.stores import (
    CollectResult,
    Connector,
    ConnectorContext,
    StoreUnavailable,
    Subject,
    connector_class,
    validate_store,
)
from dsr.stores import files as files_module
from dsr.stores.files import FilesConnector

MAX = portal.DEMO_SUBJECT

# The stanza proposed for dsr/datamap/default.yaml (appended under ``stores:``; the alias is the
# portal_db's masking rule for other parties' numbers).
MEDIA_STANZA = """
  media:
    connector: files
    description:
      de: Medienablage (Sprachnachrichten, Gesprächsaufzeichnungen, Anhänge von Support-Tickets)
      en: media store (voicemails, call recordings, support ticket attachments)
    connection:
      root: "${DSR_MEDIA_DIR:-{instance_dir}/media}"
    tables:
      voicemails:
        category: comm_content
        index:
          store: portal_db
          table: voicemails
          path_column: path
          references: {account_id: accounts.id}
        fields:
          from_number: {disclose: mask, mask: last3, reason: *partner_reason}
          account_id: {category: acct_identity}
      recordings:
        category: comm_content
        index:
          store: portal_db
          table: call_recordings
          path_column: path
          references: {account_id: accounts.id}
        fields:
          account_id: {category: acct_identity}
          call_record_id: {category: comm_traffic}
      attachments:
        category: support_cases
        index:
          store: portal_db
          table: ticket_attachments
          path_column: path
          name_column: filename
          references: {ticket_id: support_tickets.id}
"""


def map_text(stanza: str = MEDIA_STANZA) -> str:
    """The default map with its media store replaced by ``stanza``."""
    base = DEFAULT_DATAMAP.read_text(encoding="utf-8")
    base = re.sub(r"\n  media:\n(?:    .*\n|\n)*", "\n", base + "\n")
    assert base.rstrip().splitlines()[-1].startswith("  "), "stores: must stay the last section of the map"
    return base.rstrip() + "\n" + stanza


@dataclass
class World:
    engine: Engine
    url: str
    root: Path
    tmp: Path
    counts: dict[str, int]

    def datamap(self, stanza: str = MEDIA_STANZA, **env: str) -> DataMap:
        raw = yaml.safe_load(map_text(stanza))
        environ = {"DSR_PORTAL_DB_URL": self.url, "DSR_MEDIA_DIR": str(self.root), **env}
        return parse(raw, source=None, instance_dir=self.tmp, environ=environ, validate_store=validate_store)

    def connectors(self, datamap: DataMap) -> Callable[[str], Connector]:
        cache: dict[str, Connector] = {}

        def get(name: str) -> Connector:
            if name not in cache:
                spec = datamap.stores[name]
                cache[name] = connector_class(spec.connector)(spec, ConnectorContext(self.tmp, get))
            return cache[name]

        return get

    def media(self, **env: str) -> FilesConnector:
        connector = self.connectors(self.datamap(**env))("media")
        assert isinstance(connector, FilesConnector)
        return connector

    def sql(self, query: str, **params: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(text(query), params))


@pytest.fixture
def world(tmp_path: Path) -> World:
    url = f"sqlite:///{tmp_path / 'portal.sqlite'}"
    engine = make_engine(url)
    portal.build(engine, portal.DemoSize(subjects=8, rows=6))
    counts = blobs.build(engine, tmp_path / "media")
    yield World(engine, url, tmp_path / "media", tmp_path, counts)
    engine.dispose()


@dataclass
class Output:
    result: CollectResult
    folder: Path
    sink: DisclosingSink

    def rows(self, table: str) -> list[dict[str, str]]:
        with (self.folder / f"{table}.csv").open(encoding="utf-8-sig", newline="") as f:
            return list(csv.DictReader(f))

    def files(self, table: str) -> set[str]:
        folder = self.folder / table
        return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


def collect(connector: Connector, out: Path, subject: Subject | None = None) -> Output:
    sink = DisclosingSink(CsvDirectorySink(out), connector.store)
    result = connector.collect(subject or Subject.from_email(MAX), sink)
    return Output(result, out, sink)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


EXPECTED = {
    "voicemails": "SELECT v.id, v.path FROM voicemails v JOIN accounts a ON a.id = v.account_id WHERE a.email = :e",
    "recordings": "SELECT r.id, r.path FROM call_recordings r JOIN accounts a ON a.id = r.account_id "
                  "WHERE a.email = :e",
    "attachments": "SELECT x.id, x.path FROM ticket_attachments x JOIN support_tickets t ON t.id = x.ticket_id "
                   "JOIN accounts a ON a.id = t.account_id WHERE a.email = :e",
}


def expected(world: World, table: str, email: str = MAX) -> dict[str, str]:
    """id -> path of the subject's index rows, read straight from the DB."""
    return {str(r.id): r.path for r in world.sql(EXPECTED[table], e=email)}


# --- the stanza and the demo ---------------------------------------------------------------------


def test_the_proposed_stanza_loads_in_the_default_map(world):
    datamap = world.datamap()
    media = datamap.stores["media"]
    assert media.connector == "files"
    assert media.resolved().connection["root"] == str(world.root)  # variables are read where used
    assert set(media.tables) == {"voicemails", "recordings", "attachments"}
    assert FilesConnector.validate_links(media, datamap.stores) == []
    # Without the variable the folder is in the instance folder.
    default = parse(yaml.safe_load(map_text()), source=None, instance_dir=world.tmp,
                    environ={"DSR_PORTAL_DB_URL": world.url}, validate_store=validate_store)
    assert default.stores["media"].resolved().connection["root"] == f"{world.tmp}/media"


def test_the_demo_gives_max_voicemails_a_recording_and_attachments(world):
    assert len(expected(world, "voicemails")) >= 2
    assert len(expected(world, "recordings")) >= 1
    assert len(expected(world, "attachments")) >= 1
    assert world.counts == {name: world.sql(f"SELECT count(*) AS n FROM {name}")[0].n  # noqa: S608
                            for name in ("voicemails", "call_recordings", "ticket_attachments")}
    # Every account's indexed files exist, and the audio is valid WAV.
    for name in ("voicemails", "call_recordings", "ticket_attachments"):
        for (path,) in world.sql(f"SELECT path FROM {name}"):  # noqa: S608
            assert (world.root / path).is_file(), path
    some = next(iter(expected(world, "voicemails").values()))
    with wave.open(str(world.root / some)) as audio:
        assert (audio.getnchannels(), audio.getframerate(), audio.getsampwidth()) == (1, 8000, 1)
        assert audio.getnframes() > 1000
    assert all(p.stat().st_size < 16_000 for p in world.root.rglob("*") if p.is_file())


def test_the_demo_is_deterministic_and_rebuilds_in_place(world, tmp_path):
    first = {p.relative_to(world.root).as_posix(): sha256(p) for p in world.root.rglob("*") if p.is_file()}
    rows = world.sql("SELECT * FROM voicemails ORDER BY id")
    again = blobs.build(world.engine, world.root)  # the same folder: replaced, not added to
    assert again == world.counts
    assert {p.relative_to(world.root).as_posix(): sha256(p) for p in world.root.rglob("*") if p.is_file()} == first
    assert world.sql("SELECT * FROM voicemails ORDER BY id") == rows
    other = tmp_path / "other-seed"
    blobs.build(world.engine, other, seed=7)
    assert {p.relative_to(other).as_posix(): sha256(p) for p in other.rglob("*") if p.is_file()} != first


def test_the_demo_never_replaces_a_folder_it_did_not_write(world, tmp_path):
    real = tmp_path / "real-media"
    (real / "voicemails").mkdir(parents=True)
    (real / "voicemails" / "keep.wav").write_bytes(b"RIFF")
    with pytest.raises(ValueError, match="refusing"):
        blobs.build(world.engine, real)
    assert (real / "voicemails" / "keep.wav").exists()


def test_the_demo_needs_the_portal_tables(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'empty.sqlite'}")
    with pytest.raises(ValueError, match="portal"):
        blobs.build(engine, tmp_path / "media")
    engine.dispose()


# --- collect through an index --------------------------------------------------------------------


def test_index_tables_export_exactly_the_subjects_files_with_size_and_checksum(world, tmp_path):
    out = collect(world.media(), tmp_path / "out")
    for table in ("voicemails", "recordings", "attachments"):
        want = expected(world, table)
        rows = out.rows(table)
        assert {r["id"] for r in rows} == set(want), table
        assert all(r["status"] == "exported" for r in rows)
        assert out.result.found[table] == out.result.files[table] == len(want)
        assert out.files(table) == {r["file"].removeprefix(f"{table}/") for r in rows}
        for row in rows:
            source = world.root / want[row["id"]]
            packaged = out.folder / row["file"]
            assert row["path"] == want[row["id"]]
            assert int(row["size"]) == source.stat().st_size == packaged.stat().st_size
            assert row["sha256"] == sha256(source) == sha256(packaged)
    assert out.result.notes == []
    # An attachment keeps its uploaded name (made safe) in the package.
    assert {r["file"] for r in out.rows("attachments")} == {"attachments/Screenshot_Rechnung.png",
                                                           "attachments/Fehlerprotokoll.txt"}


def test_only_the_subject_gets_files_and_other_subjects_get_their_own(world, tmp_path):
    other = world.sql("SELECT a.email FROM accounts a JOIN voicemails v ON v.account_id = a.id WHERE a.id > 1 "
                      "ORDER BY a.id LIMIT 1")[0].email
    mine = collect(world.media(), tmp_path / "max")
    theirs = collect(world.media(), tmp_path / "other", Subject.from_email(other))
    assert {r["id"] for r in theirs.rows("voicemails")} == set(expected(world, "voicemails", other))
    assert not {r["sha256"] for r in mine.rows("voicemails")} & {r["sha256"] for r in theirs.rows("voicemails")}
    nobody = collect(world.media(), tmp_path / "nobody", Subject.from_email("nobody@example.net"))
    assert nobody.result.total == 0
    assert all(nobody.rows(t) == [] for t in ("voicemails", "recordings", "attachments"))
    assert not any(nobody.files(t) for t in ("voicemails", "recordings", "attachments"))


def test_the_other_partys_number_is_masked_by_the_field_rules(world, tmp_path):
    out = collect(world.media(), tmp_path / "out")
    numbers = [r["from_number"] for r in out.rows("voicemails")]
    real = {r.from_number for r in world.sql("SELECT from_number FROM voicemails WHERE account_id = 1")}
    assert numbers and all(n.endswith("xxx") for n in numbers)
    assert not set(numbers) & real
    rule = out.sink.summary()["voicemails"]["from_number"]
    assert (rule["disclose"], rule["mask"]) == ("mask", "last3")
    assert len(numbers) in rule.values()  # how many were masked


def test_collect_is_idempotent(world, tmp_path):
    connector = world.media()
    first = collect(connector, tmp_path / "one")
    second = collect(connector, tmp_path / "two")
    assert first.result == second.result
    for table in ("voicemails", "recordings", "attachments"):
        assert first.rows(table) == second.rows(table)
        assert first.files(table) == second.files(table)


def test_a_path_leaving_the_root_is_refused_reported_and_never_read(world, tmp_path, monkeypatch):
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("root:x:0:0:secret\n")
    (world.root / "voicemails" / "link.wav").symlink_to(secret)
    hostile = ["../../etc/passwd", "/etc/passwd", "voicemails/../../outside/secret.txt", str(secret),
               "voicemails/link.wav", "../outside/secret.txt"]
    with world.engine.begin() as conn:
        conn.execute(insert(blobs.voicemails), [
            {"id": 900 + i, "account_id": 1, "path": path, "from_number": "+4915100000000"}
            for i, path in enumerate(hostile)
        ])
    opened: list[Path] = []
    real_open = files_module._open_blob

    def watch(path: Path) -> Any:
        opened.append(path)
        return real_open(path)

    monkeypatch.setattr(files_module, "_open_blob", watch)
    out = collect(world.media(), tmp_path / "out")

    rows = {r["id"]: r for r in out.rows("voicemails")}
    assert {rows[str(900 + i)]["status"] for i in range(len(hostile))} == {"refused"}
    assert all(rows[str(900 + i)]["file"] == "" for i in range(len(hostile)))
    assert opened and all(p.is_relative_to(world.root.resolve()) for p in opened)
    assert out.result.files["voicemails"] == len(expected(world, "voicemails")) - len(hostile)
    assert out.result.found["voicemails"] == len(expected(world, "voicemails"))
    [note] = out.result.notes
    assert note.startswith(f"voicemails: {len(hostile)} paths in the index portal_db.voicemails point outside")
    assert "900" in note
    for packaged in (tmp_path / "out").rglob("*"):
        if packaged.is_file():
            assert b"root:x:0:0" not in packaged.read_bytes()


def test_a_missing_file_is_a_note_not_a_failure(world, tmp_path):
    want = expected(world, "voicemails")
    gone_id, gone = sorted(want.items())[0]
    (world.root / gone).unlink()
    out = collect(world.media(), tmp_path / "out")
    rows = {r["id"]: r for r in out.rows("voicemails")}
    assert rows[gone_id]["status"] == "missing" and rows[gone_id]["file"] == "" and rows[gone_id]["sha256"] == ""
    assert all(r["status"] == "exported" for i, r in rows.items() if i != gone_id)
    assert out.result.found["voicemails"] == len(want)
    assert out.result.files["voicemails"] == len(want) - 1
    assert out.result.notes == [
        f"voicemails: 1 file listed in the index portal_db.voicemails is missing (id {gone_id})"]
    assert out.result.files["recordings"] == len(expected(world, "recordings"))


def test_an_index_row_without_a_path_is_listed_without_a_file(world, tmp_path):
    with world.engine.begin() as conn:
        conn.execute(insert(blobs.voicemails), [{"id": 990, "account_id": 1, "path": "", "duration_s": 0}])
    out = collect(world.media(), tmp_path / "out")
    rows = {r["id"]: r for r in out.rows("voicemails")}
    assert rows["990"]["status"] == "no_file"
    assert out.result.notes == []


def test_same_file_names_in_one_table_get_unique_names(world, tmp_path):
    (world.root / "voicemails" / "dup").mkdir()
    (world.root / "voicemails" / "dup" / "vm-000001.wav").write_bytes(b"another file, same name")
    with world.engine.begin() as conn:
        conn.execute(insert(blobs.voicemails), [{"id": 991, "account_id": 1, "path": "voicemails/dup/vm-000001.wav"}])
    out = collect(world.media(), tmp_path / "out")
    names = [r["file"] for r in out.rows("voicemails")]
    assert len(names) == len(set(names))
    assert "voicemails/vm-000001-2.wav" in names


def test_an_unreadable_store_raises_store_unavailable(world, tmp_path):
    with pytest.raises(StoreUnavailable, match="folder"):
        collect(world.media(DSR_MEDIA_DIR=str(tmp_path / "not-mounted")), tmp_path / "a")
    broken = f"sqlite:///{tmp_path / 'gone' / 'portal.sqlite'}"
    with pytest.raises(StoreUnavailable):
        collect(world.media(DSR_PORTAL_DB_URL=broken), tmp_path / "b")


# --- collect through a pattern -------------------------------------------------------------------

PATTERN_STANZA = """
  media:
    connector: files
    description: {de: Exporte, en: exports}
    connection:
      root: "${DSR_MEDIA_DIR}"
      identities_from: portal_db
    tables:
      exports:
        category: support_cases
        pattern: "exports/{customer_id}/*"
      mail:
        category: support_cases
        pattern: "mail/{email}/*.eml"
"""


def _pattern_files(root: Path) -> None:
    for folder, names in {"exports/K00000001": ["a.pdf", "b.txt"], "exports/K00000010": ["other.pdf"],
                          "exports/K00000001x": ["lookalike.pdf"], "exports/K00000001/sub": ["deeper.pdf"],
                          f"mail/{MAX}": ["1.eml", "skip.txt"], "mail/nobody@example.net": ["2.eml"]}.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for name in names:
            (root / folder / name).write_text(f"{folder}/{name}\n")


def test_pattern_tables_find_files_by_identity_looked_up_in_the_sql_store(world, tmp_path):
    _pattern_files(world.root)
    media = world.connectors(world.datamap(PATTERN_STANZA))("media")
    out = collect(media, tmp_path / "out")
    assert {r["path"] for r in out.rows("exports")} == {"exports/K00000001/a.pdf", "exports/K00000001/b.txt"}
    assert {r["path"] for r in out.rows("mail")} == {f"mail/{MAX}/1.eml"}
    assert out.files("exports") == {"a.pdf", "b.txt"}
    for row in out.rows("exports"):
        assert row["sha256"] == sha256(world.root / row["path"]) == sha256(out.folder / row["file"])
        assert int(row["size"]) == (world.root / row["path"]).stat().st_size
        assert row["modified_at"]
    assert out.result.found == {"exports": 2, "mail": 1} and out.result.files == {"exports": 2, "mail": 1}


def test_a_pattern_without_a_known_identity_searches_nothing_and_says_so(world, tmp_path):
    _pattern_files(world.root)
    stanza = PATTERN_STANZA.replace("      identities_from: portal_db\n", "")
    media = world.connectors(world.datamap(stanza))("media")
    out = collect(media, tmp_path / "out")
    assert out.result.found["exports"] == 0
    assert out.result.notes == ["exports: not searched: the subject's customer_id is not known "
                                "(pattern exports/{customer_id}/*)"]
    assert any("warning: stores.media.tables.exports.pattern" in p for p in media.check())
    # A request that carries the customer number finds them without a lookup.
    direct = collect(media, tmp_path / "direct", Subject({"email": MAX, "customer_id": "K00000001"}))
    assert direct.result.files["exports"] == 2


def test_identity_values_cannot_leave_the_root_or_widen_the_pattern(world, tmp_path):
    _pattern_files(world.root)
    media = world.connectors(world.datamap(PATTERN_STANZA))("media")
    for value in ("../exports/K00000010", "..", "K0000001*", "K0000000[01]0"):
        out = collect(media, tmp_path / f"out-{abs(hash(value))}", Subject({"customer_id": value}))
        assert out.result.files.get("exports", 0) == 0, value


def test_a_symlink_found_by_a_pattern_is_refused(world, tmp_path):
    _pattern_files(world.root)
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0\n")
    (world.root / "exports" / "K00000001" / "evil.pdf").symlink_to(secret)
    media = world.connectors(world.datamap(PATTERN_STANZA))("media")
    out = collect(media, tmp_path / "out")
    rows = {r["path"]: r for r in out.rows("exports")}
    assert rows["exports/K00000001/evil.pdf"]["status"] == "refused"
    assert "evil.pdf" not in out.files("exports")
    assert any("outside the store's folder" in n for n in out.result.notes)


def test_a_pipe_in_the_folder_is_never_opened(world, tmp_path):
    _pattern_files(world.root)
    os.mkfifo(world.root / "exports" / "K00000001" / "pipe.pdf")  # opening it would block forever
    media = world.connectors(world.datamap(PATTERN_STANZA))("media")
    out = collect(media, tmp_path / "out")
    rows = {r["path"]: r for r in out.rows("exports")}
    assert rows["exports/K00000001/pipe.pdf"]["status"] == "missing"
    assert out.result.files["exports"] == 2


def test_a_50_mb_file_streams_with_little_memory(tmp_path):
    root = tmp_path / "big"
    (root / MAX).mkdir(parents=True)
    blob = root / MAX / "recording.wav"
    chunk = bytes(range(256)) * 4096  # 1 MiB
    with blob.open("wb") as f:
        for _ in range(50):
            f.write(chunk)
    store = Store("big", "files", {"de": "x", "en": "x"}, {"root": str(root)}, {},
                  {"calls": MapTable("calls", "comm_content", {}, {"pattern": "{email}/*"})})
    connector = FilesConnector(store, ConnectorContext(tmp_path))
    tracemalloc.start()
    try:
        out = collect(connector, tmp_path / "out")
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"
    [row] = out.rows("calls")
    assert int(row["size"]) == 50 * len(chunk) == (out.folder / row["file"]).stat().st_size
    assert row["sha256"] == sha256(blob)


def test_hashing_reader_counts_whatever_way_the_sink_reads(tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(os.urandom(300_000))
    for read in (lambda r: r.read(), lambda r: [r.read(7) for _ in range(50_000)], lambda r: r.readall()):
        with path.open("rb") as f:
            reader = files_module.HashingReader(f)
            read(reader)
            assert reader.size == 300_000
            assert reader.sha256 == sha256(path)


# --- validation ----------------------------------------------------------------------------------


def _problems(world: World, tables: str, connection: str = 'root: "/srv/media"') -> list[str]:
    stanza = f"""
  media:
    connector: files
    description: {{de: Medien, en: media}}
    connection:
      {connection}
    tables:
{tables}
"""
    path = world.tmp / "map.yaml"
    path.write_text(map_text(stanza), encoding="utf-8")
    with pytest.raises(DataMapError) as caught:
        load(path, instance_dir=world.tmp, environ={"DSR_PORTAL_DB_URL": world.url}, validate_store=validate_store)
    return caught.value.problems


@pytest.mark.parametrize(("tables", "where", "message"), [
    ("      both:\n        category: comm_content\n        pattern: \"a/{email}/*\"\n"
     "        index: {store: portal_db, table: voicemails, path_column: path}\n",
     "stores.media.tables.both", "exactly one of index"),
    ("      neither:\n        category: comm_content\n",
     "stores.media.tables.neither", "exactly one of index"),
    ("      open:\n        category: comm_content\n        pattern: \"voicemails/*\"\n",
     "stores.media.tables.open.pattern", "every subject would get every file"),
    ("      odd:\n        category: comm_content\n        pattern: \"a/{account}/*\"\n",
     "stores.media.tables.odd.pattern", "unknown placeholder {account}"),
    ("      wide:\n        category: comm_content\n        pattern: \"a/{customer_id}*\"\n",
     "stores.media.tables.wide.pattern", "would also match other subjects"),
    ("      out:\n        category: comm_content\n        pattern: \"../{email}/*\"\n",
     "stores.media.tables.out.pattern", "inside the root"),
    ("      abs:\n        category: comm_content\n        pattern: \"/srv/{email}/*\"\n",
     "stores.media.tables.abs.pattern", "inside the root"),
    ("      typo:\n        category: comm_content\n"
     "        index: {store: portal_db, table: voicemails, path_colum: path}\n",
     "stores.media.tables.typo.index", "path_colum"),
    ("      refs:\n        category: comm_content\n"
     "        index: {store: portal_db, table: voicemails, path_column: path, references: {account_id: accounts}}\n",
     "stores.media.tables.refs.index.references", "table.column"),
])
def test_invalid_tables_are_named_with_file_line_and_path(world, tables, where, message):
    problems = _problems(world, tables)
    assert any("map.yaml:" in p and f": {where}" in p and message in p for p in problems), problems


def test_a_connection_needs_a_root_and_nothing_unknown(world):
    tables = "      t:\n        category: comm_content\n        pattern: \"{email}/*\"\n"
    assert any(": stores.media.connection.root" in p for p in _problems(world, tables, "roots: /srv"))
    assert any(": stores.media.connection.roots" in p and "Unknown" in p
               for p in _problems(world, tables, "roots: /srv"))


def test_index_stores_and_tables_must_exist_in_the_map(world):
    stanza = MEDIA_STANZA.replace("store: portal_db\n          table: voicemails",
                                  "store: portal\n          table: voicemails")
    stanza = stanza.replace("references: {ticket_id: support_tickets.id}", "references: {ticket_id: tickets.id}")
    stanza = stanza.replace("          table: call_recordings\n          path_column: path\n"
                            "          references: {account_id: accounts.id}\n",
                            "          table: call_recordings\n          path_column: path\n")
    # The loader now asks every connector about its links: the map does not load at all.
    with pytest.raises(DataMapError) as caught:
        world.datamap(stanza)
    assert any("stores.media.tables.voicemails.index.store: unknown store 'portal'" in p
               for p in caught.value.problems)
    raw = yaml.safe_load(map_text(stanza))
    environ = {"DSR_PORTAL_DB_URL": world.url, "DSR_MEDIA_DIR": str(world.root)}
    datamap = parse(raw, source=None, instance_dir=world.tmp, environ=environ)  # no connector checks
    problems = FilesConnector.validate_links(datamap.stores["media"], datamap.stores)
    assert problems == [
        ("stores.media.tables.voicemails.index.store", "unknown store 'portal'"),
        ("stores.media.tables.recordings.index.references",
         "store 'portal_db' does not list table 'call_recordings': give references (column -> table.column of "
         "that store) to find the subject's rows"),
        ("stores.media.tables.attachments.index.references.ticket_id", "unknown table 'tickets' in store 'portal_db'"),
    ]
    problems = FilesConnector(datamap.stores["media"], ConnectorContext(world.tmp, world.connectors(datamap))).check()
    assert "stores.media.tables.voicemails.index.store: unknown store 'portal'" in problems
    assert any(p.startswith("stores.media.tables.recordings.index.references: store 'portal_db' does not list")
               for p in problems)
    assert any(p.startswith("stores.media.tables.attachments.index.references.ticket_id: unknown table")
               for p in problems)


# --- check ---------------------------------------------------------------------------------------


def test_check_passes_on_the_demo(world):
    assert world.media().check() == []


def test_check_names_a_missing_root(world, tmp_path):
    problems = world.media(DSR_MEDIA_DIR=str(tmp_path / "nowhere")).check()
    assert problems == [f"stores.media.connection.root: no folder {tmp_path / 'nowhere'} (or it cannot be read)"]


def test_check_names_missing_tables_and_columns(world):
    stanza = MEDIA_STANZA.replace("table: voicemails\n          path_column: path",
                                  "table: voicemails\n          path_column: file_path")
    stanza = stanza.replace("table: call_recordings", "table: recordings_index")
    problems = world.connectors(world.datamap(stanza))("media").check()
    assert "stores.media.tables.voicemails.index.path_column: no column 'file_path' in portal_db.voicemails" \
        in problems
    assert "stores.media.tables.recordings.index.table: no table 'recordings_index' in store portal_db" in problems


def test_check_warns_when_indexed_files_are_missing_or_outside(world):
    for path in (world.root / "voicemails").rglob("*.wav"):
        path.unlink()
    with world.engine.begin() as conn:
        conn.execute(text("UPDATE call_recordings SET path = '../../etc/passwd'"))
    problems = world.media().check()
    assert len(problems) == 2, problems
    assert re.match(r"warning: stores\.media\.tables\.voicemails\.index: (\d) of \1 sampled files listed in "
                    r"portal_db\.voicemails are missing", problems[0]), problems
    assert re.match(r"warning: stores\.media\.tables\.recordings\.index: (\d) of \1 sampled paths in "
                    r"portal_db\.call_recordings point outside", problems[1]), problems


def test_check_names_an_unreachable_index_store(world, tmp_path):
    broken = f"sqlite:///{tmp_path / 'gone' / 'portal.sqlite'}"
    problems = world.media(DSR_PORTAL_DB_URL=broken).check()
    assert {p.split(": ")[0] for p in problems} == {f"stores.media.tables.{t}.index.store"
                                                   for t in ("voicemails", "recordings", "attachments")}

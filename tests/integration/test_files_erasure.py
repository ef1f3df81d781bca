"""Art. 17 erasure in the files store (issue 13): the subject's blobs unlinked, then their index rows deleted.

Every test builds its own demo portal and media folder (SQLite: a file in tmp; PostgreSQL: a database of its
own, dropped afterwards), so the session's shared store stays as the other tests expect it. What belongs to
Max is decided here by plain SQL on the index tables, independently of the connector's membership queries.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import Engine, create_engine, insert, select, text
from sqlalchemy.engine import make_url

from dsr.config import DEFAULT_DATAMAP
from dsr.datamap import load
from dsr.datamap.loader import parse
from dsr.db import make_engine
from dsr.demo import blobs, portal
from dsr.stores import Connector, connector_class, validate_store
from dsr.stores.base import ConnectorContext, ErasureCount, Subject, TableErasure, TooMany
from dsr.stores.files import FilesConnector
from dsr.stores.sql import ErasurePlanError, SqlConnector
from tests.integration.test_sql_erasure import workable_plan
from tests.unit.test_files_connector import PATTERN_STANZA, _pattern_files, map_text

MAX = Subject.from_email(portal.DEMO_SUBJECT)
TABLES = {"voicemails": "voicemails", "recordings": "call_recordings", "attachments": "ticket_attachments"}
DELETE = {name: TableErasure("delete") for name in TABLES}
# Max's index rows (id, path) per media table, by plain SQL.
MAXS = {
    "voicemails": "SELECT v.id, v.path FROM voicemails v JOIN accounts a ON a.id = v.account_id WHERE a.email = :e",
    "recordings": "SELECT r.id, r.path FROM call_recordings r JOIN accounts a ON a.id = r.account_id "
                  "WHERE a.email = :e",
    "attachments": "SELECT x.id, x.path FROM ticket_attachments x JOIN support_tickets t ON t.id = x.ticket_id "
                   "JOIN accounts a ON a.id = t.account_id WHERE a.email = :e",
}


@pytest.fixture
def store_url(backend: Any, tmp_path: Path) -> Iterator[str]:
    """A demo portal of 12 subjects with the media index tables, of this test's own."""
    if not backend.real:
        url = f"sqlite:///{tmp_path / 'portal.sqlite'}"
        _build(url, tmp_path / "media")
        yield url
        return
    admin = create_engine(backend.store_url, isolation_level="AUTOCOMMIT")
    name = f"dsr_erase_files_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(backend.store_url).set(database=name).render_as_string(False)
    try:
        _build(url, tmp_path / "media")
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _build(url: str, media: Path) -> None:
    engine = make_engine(url, create_folder=True)
    portal.build(engine, portal.DemoSize(subjects=12, rows=30))
    blobs.build(engine, media)
    engine.dispose()


@dataclass
class World:
    db: Engine
    media: Path
    connector: Callable[[str], Connector]

    @property
    def files(self) -> FilesConnector:
        c = self.connector("media")
        assert isinstance(c, FilesConnector)
        return c

    @property
    def sql(self) -> SqlConnector:
        c = self.connector("portal_db")
        assert isinstance(c, SqlConnector)
        return c

    def maxs(self) -> dict[str, dict[int, str]]:
        """Max's index rows per table: id -> path."""
        with self.db.connect() as conn:
            return {name: {int(r.id): r.path for r in conn.execute(text(q), {"e": MAX.identities["email"]})}
                    for name, q in MAXS.items()}

    def rows(self) -> dict[str, set[tuple[Any, ...]]]:
        """Every row of the index tables."""
        with self.db.connect() as conn:
            return {t.name: {tuple(r) for r in conn.execute(select(t))}
                    for t in (blobs.voicemails, blobs.call_recordings, blobs.ticket_attachments)}

    def disk(self) -> dict[str, str]:
        """Every file under the media folder: relative path -> SHA-256."""
        return {p.relative_to(self.media).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(self.media.rglob("*")) if p.is_file() and p.name != blobs.MARKER}

    def state(self) -> tuple[dict[str, set[tuple[Any, ...]]], dict[str, str]]:
        return self.rows(), self.disk()


@pytest.fixture
def world(store_url: str, tmp_path: Path) -> Iterator[World]:
    m = load(DEFAULT_DATAMAP, instance_dir=tmp_path,
             environ={"DSR_PORTAL_DB_URL": store_url, "DSR_MEDIA_DIR": str(tmp_path / "media")},
             validate_store=validate_store)
    cache: dict[str, Connector] = {}

    def get(name: str) -> Connector:
        if name not in cache:
            spec = m.stores[name]
            cache[name] = connector_class(spec.connector)(spec, ConnectorContext(tmp_path, get))
        return cache[name]

    db = make_engine(store_url)
    yield World(db, tmp_path / "media", get)
    for c in cache.values():
        c.close()
    db.dispose()


def _without_max(before: dict[str, set[tuple[Any, ...]]], disk: dict[str, str],
                 maxs: dict[str, dict[int, str]]) -> tuple[dict[str, set[tuple[Any, ...]]], dict[str, str]]:
    """The state expected after erasing Max: his rows (by id) and files (by path) gone, the rest as it was."""
    rows = {TABLES[name]: {r for r in before[TABLES[name]] if r[0] not in maxs[name]} for name in TABLES}
    paths = {p for ids in maxs.values() for p in ids.values()}
    return rows, {p: h for p, h in disk.items() if p not in paths}


def test_erasing_max_removes_his_files_and_index_rows_and_nothing_else(world):
    maxs = world.maxs()
    # The demo gives Max two voicemails, a recording and two attachments per ticket.
    assert (len(maxs["voicemails"]), len(maxs["recordings"])) == (2, 1)
    assert maxs["attachments"] and len(maxs["attachments"]) % 2 == 0
    before = world.state()
    expected = {name: ErasureCount(found=len(maxs[name]), deleted=len(maxs[name])) for name in TABLES}

    preview = world.files.preview(MAX, DELETE)
    assert world.state() == before  # a preview changes nothing
    assert preview.tables == expected and preview.notes == []

    result = world.files.erase(MAX, DELETE)
    assert result == preview  # the preview counted exactly what the erasure did
    assert world.maxs() == {name: {} for name in TABLES}
    assert world.state() == _without_max(*before, maxs)
    for paths in maxs.values():
        assert not any((world.media / p).exists() for p in paths.values())

    again = world.files.erase(MAX, DELETE)  # idempotent: nothing left to find
    assert again.tables == {name: ErasureCount() for name in TABLES} and again.notes == []
    assert world.state() == _without_max(*before, maxs)


def test_the_files_store_goes_before_the_sql_store(world):
    """The sql erasure refuses to delete Max's tickets while attachment index rows point at them (its
    preview only notes them: the files store erases first); after the files store's erasure it goes through."""
    with pytest.raises(ErasurePlanError, match="ticket_attachments"):
        world.sql.erase(MAX, workable_plan(world.sql))
    notes = world.sql.preview(MAX, workable_plan(world.sql)).notes
    assert any("ticket_attachments (outside the data map)" in n for n in notes), notes
    world.files.erase(MAX, DELETE)
    assert not any("ticket_attachments" in n for n in world.sql.preview(MAX, workable_plan(world.sql)).notes)
    assert world.sql.preview(MAX, workable_plan(world.sql)).tables["support_tickets"].deleted > 0


def test_a_bound_below_the_count_stops_before_anything_changes(world):
    before = world.state()
    touched = world.files.preview(MAX, DELETE).touched
    with pytest.raises(TooMany) as caught:
        world.files.erase(MAX, DELETE, bound=touched - 1)
    assert (caught.value.touched, caught.value.bound) == (touched, touched - 1)
    assert world.state() == before
    assert world.files.erase(MAX, DELETE, bound=touched).touched == touched


def test_retain_counts_and_changes_nothing_and_null_is_refused(world):
    maxs = world.maxs()
    before = world.state()
    plan = {**DELETE, "recordings": TableErasure("retain")}
    result = world.files.erase(MAX, plan)
    assert result.tables["recordings"] == ErasureCount(found=1, retained=1)
    assert "recordings: 1 file of the subject kept as they are (erasure method retain)" in result.notes
    rows, disk = world.state()
    assert rows["call_recordings"] == before[0]["call_recordings"]
    assert all(p in disk for p in maxs["recordings"].values())

    with pytest.raises(ValueError, match="table voicemails: null cannot erase"):
        world.files.erase(MAX, {"voicemails": TableErasure("null", ("from_number",))})
    with pytest.raises(ValueError, match="no table 'faxes'"):
        world.files.preview(MAX, {"faxes": TableErasure("delete")})
    assert world.state() == (rows, disk)


def test_a_listed_file_missing_on_disk_is_counted_its_row_deleted_and_noted(world):
    maxs = world.maxs()
    gone_id, gone = next(iter(maxs["voicemails"].items()))
    (world.media / gone).unlink()
    before = world.state()
    result = world.files.erase(MAX, DELETE)
    assert result.tables["voicemails"] == ErasureCount(found=2, deleted=2)
    assert result.notes == [f"voicemails: 1 file listed in the index portal_db.voicemails is missing "
                            f"(id {gone_id}); its index row was deleted"]
    assert world.maxs()["voicemails"] == {}
    assert world.state() == _without_max(*before, maxs)


def test_a_path_outside_the_folder_is_never_deleted_and_noted(world, tmp_path):
    outside = tmp_path / "not-media.wav"
    outside.write_bytes(b"someone else's")
    maxs = world.maxs()
    vm_id = min(maxs["voicemails"])
    with world.db.begin() as conn:
        conn.execute(text("UPDATE voicemails SET path = :p WHERE id = :i"), {"p": "../not-media.wav", "i": vm_id})
    result = world.files.erase(MAX, DELETE)
    assert result.tables["voicemails"] == ErasureCount(found=2, deleted=1, retained=1)
    note = (f"voicemails: 1 path in the index portal_db.voicemails points outside the store's folder (id {vm_id}): "
            "neither the file nor its index row was erased")
    assert any(n.startswith(note) for n in result.notes)
    assert outside.read_bytes() == b"someone else's"
    assert world.maxs()["voicemails"] == {vm_id: "../not-media.wav"}  # kept for the person who looks
    assert (world.media / maxs["voicemails"][vm_id]).exists()  # the row no longer names it: not Max's here


def test_a_worker_killed_between_the_phases_leaves_a_state_a_rerun_completes(world):
    maxs = world.maxs()
    before = world.state()
    files = world.files

    def killed() -> None:
        raise SystemExit("worker killed")

    files.after_unlink = killed
    with pytest.raises(SystemExit):
        files.erase(MAX, DELETE)
    # Blobs gone, rows still there: the rows lead a rerun to them (never a blob without its row).
    assert world.maxs() == maxs
    assert not any((world.media / p).exists() for ids in maxs.values() for p in ids.values())
    preview = files.preview(MAX, DELETE)
    assert {n: c.found for n, c in preview.tables.items()} == {n: len(v) for n, v in maxs.items()}

    files.after_unlink = None
    result = files.erase(MAX, DELETE)
    assert result.tables == {name: ErasureCount(found=len(maxs[name]), deleted=len(maxs[name])) for name in TABLES}
    assert all("missing" in n for n in result.notes) and len(result.notes) == 3
    assert world.maxs() == {name: {} for name in TABLES}
    assert world.state() == _without_max(*before, maxs)


def test_a_file_indexed_during_the_erasure_goes_with_its_row(world):
    """A voicemail arriving between the two phases: its row is deleted with the others, so its blob must
    not outlive it."""
    files = world.files
    late = "voicemails/00001/vm-late.wav"

    def arrives() -> None:
        (world.media / late).write_bytes(b"RIFF late")
        with world.db.begin() as conn:
            conn.execute(insert(blobs.voicemails), {
                "id": 10_000, "account_id": 1, "path": late, "from_number": None,
                "received_at": datetime(2026, 3, 1, tzinfo=UTC), "duration_s": 1})

    files.after_unlink = arrives
    result = files.erase(MAX, DELETE)
    assert result.tables["voicemails"] == ErasureCount(found=2, deleted=3)
    assert "voicemails: 1 file added during the erasure was deleted with its index row" in result.notes
    assert not (world.media / late).exists()
    assert world.maxs()["voicemails"] == {}


def test_pattern_tables_lose_the_subjects_files_and_keep_a_link_out_of_the_folder(store_url, tmp_path):
    media = tmp_path / "media"
    _pattern_files(media)
    secret = tmp_path / "secret.txt"
    secret.write_text("not the store's\n")
    (media / "exports" / "K00000001" / "evil.pdf").symlink_to(secret)
    m = parse(yaml.safe_load(map_text(PATTERN_STANZA)), source=None, instance_dir=tmp_path,
              environ={"DSR_PORTAL_DB_URL": store_url, "DSR_MEDIA_DIR": str(media)}, validate_store=validate_store)
    cache: dict[str, Connector] = {}

    def get(name: str) -> Connector:
        if name not in cache:
            cache[name] = connector_class(m.stores[name].connector)(m.stores[name], ConnectorContext(tmp_path, get))
        return cache[name]

    files = get("media")
    plan = {"exports": TableErasure("delete"), "mail": TableErasure("delete")}
    before = {p.relative_to(media).as_posix() for p in media.rglob("*") if not p.is_dir()}
    preview = files.preview(MAX, plan)
    result = files.erase(MAX, plan)
    assert result.tables == preview.tables
    assert result.notes == ["exports: 1 path in the pattern exports/{customer_id}/* points outside the store's folder "
                            "(path exports/K00000001/evil.pdf): neither the link nor its target was erased (counted as "
                            "retained); check the folder for tampering, a person must erase them"]
    assert result.tables == {"exports": ErasureCount(found=3, deleted=2, retained=1),
                             "mail": ErasureCount(found=1, deleted=1)}
    after = {p.relative_to(media).as_posix() for p in media.rglob("*") if not p.is_dir()}
    email = MAX.identities["email"]
    assert before - after == {"exports/K00000001/a.pdf", "exports/K00000001/b.txt", f"mail/{email}/1.eml"}
    assert secret.read_text() == "not the store's\n" and (media / "exports/K00000001/evil.pdf").is_symlink()
    again = files.erase(MAX, plan)
    assert again.tables == {"exports": ErasureCount(found=1, retained=1), "mail": ErasureCount()}
    for c in cache.values():
        c.close()

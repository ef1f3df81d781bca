"""The demo media folder: voicemails, call recordings and support ticket attachments, with the
index tables in the demo portal database that list them.

Run after ``dsr.demo.portal.build`` (the index rows point at its accounts, calls and tickets).
Everything is invented and deterministic for a given seed: audio files are tiny valid WAV files
(8 kHz, 8-bit mono, near-silence), attachments small text or PNG files. Max Mustermann (account 1)
always has two voicemails, a call recording and two ticket attachments.

Paths in the index are relative to the media folder (``voicemails/00001/vm-000001.wav``), as the
``files`` store's ``connection.root`` expects.
"""

from __future__ import annotations

import random
import shutil
import struct
import zlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Engine,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    func,
    insert,
    inspect,
    select,
)

from dsr.demo import portal

# Our own MetaData: the portal's tables (and the tests that walk them) stay as they are. The
# foreign keys name the portal's columns directly, so the DDL references the real tables.
metadata = MetaData()
MARKER = ".dsr-demo-media"  # a folder this module wrote; never clear one without it
FOLDERS = ("voicemails", "recordings", "attachments")
RATE = 8000  # samples per second of the demo audio


def _id() -> Column[Any]:
    return Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False)


voicemails = Table(
    "voicemails", metadata, _id(),
    Column("account_id", ForeignKey(portal.accounts.c.id), nullable=False, index=True),
    Column("path", String(500), nullable=False),
    Column("from_number", String(40)),
    Column("received_at", DateTime(timezone=True)),
    Column("duration_s", Integer),
)
call_recordings = Table(
    "call_recordings", metadata, _id(),
    Column("account_id", ForeignKey(portal.accounts.c.id), nullable=False, index=True),
    Column("path", String(500), nullable=False),
    Column("call_record_id", ForeignKey(portal.call_records.c.id), nullable=True, index=True),
    Column("started_at", DateTime(timezone=True)),
    Column("duration_s", Integer),
)
ticket_attachments = Table(
    "ticket_attachments", metadata, _id(),
    Column("ticket_id", ForeignKey(portal.support_tickets.c.id), nullable=False, index=True),
    Column("path", String(500), nullable=False),
    Column("filename", String(200)),
    Column("uploaded_at", DateTime(timezone=True)),
)


def build(engine: Engine, root: Path, seed: int = 42) -> dict[str, int]:
    """Drop and create the index tables, write the files under ``root`` and return rows per table.

    The portal tables must exist (``dsr.demo.portal.build``). ``root`` is created if needed; the
    demo's own folders in it are replaced, and a folder that holds them without this module's
    marker file is refused (it may hold real media).
    """
    if not inspect(engine).has_table(portal.accounts.name):
        raise ValueError("the demo portal tables are missing: build them first (dsr.demo.portal.build)")
    _prepare(root)
    drop(engine)
    metadata.create_all(engine)
    rng = random.Random(seed)
    with engine.connect() as conn:
        accounts = list(conn.execute(select(portal.accounts.c.id).order_by(portal.accounts.c.id)).scalars())
        tickets = [tuple(r) for r in conn.execute(
            select(portal.support_tickets.c.id, portal.support_tickets.c.account_id, portal.support_tickets.c.opened_at)
            .order_by(portal.support_tickets.c.id))]
        first_call = select(func.min(portal.call_records.c.id)).group_by(portal.call_records.c.account_id)
        calls = {r.account_id: r for r in conn.execute(
            select(portal.call_records.c.id, portal.call_records.c.account_id, portal.call_records.c.started_at,
                   portal.call_records.c.duration_s)
            .where(portal.call_records.c.id.in_(first_call)))}
    counts: dict[str, int] = {}
    with engine.begin() as conn:
        for table, rows in (
            (voicemails, _voicemails(rng, root, accounts)),
            (call_recordings, _recordings(rng, root, accounts, calls)),
            (ticket_attachments, _attachments(rng, root, tickets)),
        ):
            batch = list(rows)
            if batch:
                conn.execute(insert(table), batch)
            counts[table.name] = len(batch)
    return counts


def drop(engine: Engine) -> None:
    """Drop the index tables (before the portal's tables are dropped: they reference them)."""
    metadata.drop_all(engine)


def _prepare(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    ours = [root / f for f in FOLDERS if (root / f).exists()]
    if ours and not (root / MARKER).exists():
        raise ValueError(f"{root} holds {', '.join(p.name for p in ours)} but was not written by the demo "
                         f"(no {MARKER}); refusing to replace it")
    for folder in ours:
        shutil.rmtree(folder)
    (root / MARKER).write_text("written by dsr.demo.blobs; make-believe files only\n", encoding="utf-8")


def _voicemails(rng: random.Random, root: Path, accounts: list[int]) -> Iterator[dict[str, Any]]:
    n = 0
    for account in accounts:
        for _ in range(2 if account == 1 else rng.randrange(0, 3)):
            n += 1
            seconds = rng.randrange(5, 90)
            path = f"voicemails/{account:05d}/vm-{n:06d}.wav"
            _write(root / path, _wav(rng, seconds))
            yield {"id": n, "account_id": account, "path": path, "from_number": f"+49151{rng.randrange(10**7, 10**8)}",
                   "received_at": portal.EPOCH + timedelta(seconds=rng.randrange(0, 300 * 86400)),
                   "duration_s": seconds}


def _recordings(rng: random.Random, root: Path, accounts: list[int], calls: dict[int, Any]) -> Iterator[dict[str, Any]]:
    n = 0
    for account in accounts:
        for _ in range(1 if account == 1 else rng.randrange(0, 2)):
            n += 1
            call = calls.get(account)
            seconds = max(1, min(call.duration_s or 1, 3600)) if call is not None else rng.randrange(30, 600)
            path = f"recordings/{account:05d}/rec-{n:06d}.wav"
            _write(root / path, _wav(rng, seconds))
            yield {"id": n, "account_id": account, "path": path,
                   "call_record_id": call.id if call is not None else None,
                   "started_at": call.started_at if call is not None else portal.EPOCH, "duration_s": seconds}


def _attachments(rng: random.Random, root: Path, tickets: list[tuple[Any, ...]]) -> Iterator[dict[str, Any]]:
    n = 0
    for ticket_id, account, opened_at in tickets:
        for k in range(2 if account == 1 else rng.randrange(0, 2)):
            n += 1
            png = k % 2 == 0
            filename = "Screenshot Rechnung.png" if png else "Fehlerprotokoll.txt"
            path = f"attachments/{ticket_id:05d}/{n:06d}-{filename.replace(' ', '_')}"
            _write(root / path, _png(rng) if png else _text(rng, ticket_id))
            yield {"id": n, "ticket_id": ticket_id, "path": path, "filename": filename,
                   "uploaded_at": (opened_at or portal.EPOCH) + timedelta(minutes=rng.randrange(1, 120))}


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _wav(rng: random.Random, seconds: int) -> bytes:
    """A valid PCM WAV file of near-silence: a few KB however long the call (the demo's sample)."""
    samples = RATE // 4 + min(seconds, 20) * 200  # 0.25 s and a little more per second of call
    audio = bytes(128 + rng.choice((-1, 0, 0, 1)) for _ in range(samples))  # 8-bit: 128 is silence
    header = b"RIFF" + struct.pack("<I", 36 + len(audio)) + b"WAVE"
    fmt = b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, RATE, RATE, 1, 8)  # PCM, mono, 8 kHz, 8 bit
    return header + fmt + b"data" + struct.pack("<I", len(audio)) + audio


def _png(rng: random.Random, size: int = 16) -> bytes:
    """A small grey-scale PNG with a deterministic pattern."""
    shade = rng.randrange(64, 192)
    raw = b"".join(b"\x00" + bytes((shade + (x ^ y) * 3) % 256 for x in range(size)) for y in range(size))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", size, size, 8, 0, 0, 0, 0)  # 8-bit grey-scale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def _text(rng: random.Random, ticket_id: int) -> bytes:
    lines = [f"Fehlerprotokoll zu Ticket {ticket_id}"]
    lines += [f"2026-01-{rng.randrange(1, 29):02d} call failed: status {rng.choice([408, 480, 486, 503])}"
              for _ in range(rng.randrange(2, 6))]
    return ("\n".join(lines) + "\n").encode("utf-8")

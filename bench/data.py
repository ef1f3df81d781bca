"""The benchmark's data: its own PostgreSQL databases, filled with the demo generator.

``dsr_bench`` is the demo portal database, built by ``dsr.demo.portal.build`` (what ``dsr demo-data``
runs) with one big subject: Max Mustermann (account 1) gets ``size`` usage records, everybody else
a few, so his rows sit among other people's, found through the index on ``account_id``. The media
index and files (``dsr.demo.blobs``) and small demo logs (``dsr.demo.logs``) complete what the
default data map names, for the end-to-end case. ``dsr_bench_meta`` is the metadata database of
the end-to-end case, migrated with ``dsr.migrate.upgrade``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL, make_url

SUBJECT = "max.mustermann@example.com"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def require_loopback(url: str, what: str) -> None:
    host = make_url(url).host or "localhost"
    if host not in LOOPBACK:
        raise SystemExit(f"{what} must be on loopback (127.0.0.1), got host {host!r}; the benchmark "
                         "measures the database's own speed, not a network's")


@dataclass
class Databases:
    admin_url: str  # any database of the server, e.g. .../postgres
    store_name: str = "dsr_bench"
    meta_name: str = "dsr_bench_meta"

    def __post_init__(self) -> None:
        self._admin = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")

    def url(self, name: str) -> str:
        base: URL = make_url(self.admin_url)
        return base.set(database=name).render_as_string(hide_password=False)

    @property
    def store_url(self) -> str:
        return self.url(self.store_name)

    @property
    def meta_url(self) -> str:
        return self.url(self.meta_name)

    def recreate(self, name: str) -> None:
        with self._admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop(self, name: str) -> None:
        with self._admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def server_version(self) -> str:
        with self._admin.connect() as conn:
            return str(conn.execute(text("SHOW server_version")).scalar_one())

    def dispose(self) -> None:
        self._admin.dispose()


@dataclass(frozen=True)
class Built:
    seconds: float
    counts: dict[str, int]
    subject_key: int


def build_store(url: str, size: int, subjects: int, other_rows: int, media_dir: Path, seed: int = 42) -> Built:
    """Fill the store for one size, make it ready to be read (VACUUM ANALYZE) and check its indexes."""
    from dsr.db import make_engine
    from dsr.demo import analytics, blobs, portal

    started = time.perf_counter()
    engine = make_engine(url)
    try:
        counts = portal.build(engine, portal.DemoSize(subjects=subjects, rows=other_rows, subject_rows=size),
                              seed=seed)
        counts.update(blobs.build(engine, media_dir, seed=seed))
        # The analytics events, inside each person's consent (read from the store just built).
        analytics.build(analytics_folder(media_dir), analytics.consent_windows(engine), seed=seed)
        _vacuum_analyze(engine)
        _check_indexes(engine)
        with engine.connect() as conn:
            key = conn.execute(text("SELECT id FROM accounts WHERE lower(email) = :e"), {"e": SUBJECT}).scalar_one()
    finally:
        engine.dispose()
    return Built(time.perf_counter() - started, counts, int(key))


def analytics_folder(media_dir: Path) -> Path:
    """Where a run keeps its analytics exports: beside its media folder."""
    return media_dir.parent / "analytics"


EVENT_DAYS = 30  # the analytics export: one gzip file a day, as the notice keeps analytics 30 days


def build_events(folder: Path, events: int, seed: int = 42) -> tuple[int, int]:
    """An analytics export of ``events`` events in EVENT_DAYS daily gzip files, written line by line:
    10,000 customers on two browsers each, 70% of events after a login; 1% are the subject's
    (``K00000001``), on a laptop and a phone, a third of those before a login (found through the
    visitor ID), and one office browser the subject shares with customer ``K00000002`` (never
    followed). Returns (events written, events of the subject a collect must find)."""
    import gzip
    import random
    from datetime import UTC, datetime, timedelta

    from dsr.demo.analytics import DEVICES, event_record
    from dsr.demo.logs import json_line

    rng = random.Random(seed)  # noqa: S311 (invented events, not secrets)
    folder.mkdir(parents=True, exist_ok=True)
    per_day, mine = -(-events // EVENT_DAYS), 0
    written = 0
    for day in range(EVENT_DAYS):
        start = datetime(2026, 3, day + 1, tzinfo=UTC)
        path = folder / f"events-{start.date().isoformat()}.jsonl.gz"
        with gzip.open(path, "wt", encoding="utf-8", compresslevel=1) as out:
            for i in range(min(per_day, events - written)):
                roll = rng.random()
                if roll < 0.01:  # the subject
                    visitor, account = f"v-max-{i % 2}", "K00000001" if rng.random() < 0.67 else None
                    mine += 1
                elif roll < 0.0105:  # the shared office browser: the subject's logins and another's
                    visitor, account = "v-office", rng.choice(["K00000001", "K00000002", None])
                    mine += account == "K00000001"
                else:
                    customer = rng.randrange(2, 10_002)
                    visitor = f"v-{customer:08d}-{rng.randrange(2)}"
                    account = f"K{customer:08d}" if rng.random() < 0.7 else None
                at = start + timedelta(seconds=i * 86400 // per_day)
                out.write(json_line(event_record(rng, at, visitor, f"s-{rng.getrandbits(40):010x}", account,
                                                 DEVICES[0], first=account is None)) + "\n")
                written += 1
    return written, mine


def build_logs(folder: Path, subjects: int, seed: int = 42) -> dict[str, int]:
    from dsr.demo import logs

    return logs.build(folder, subjects=logs.default_subjects(subjects, seed), seed=seed)


REMOTE_CONNECTORS = ("processor",)  # stores that answer later, on a third party's schedule


def local_datamap(target: Path) -> tuple[Path, list[str]]:
    """The default data map without the stores of processors: their answer comes when the processor
    sends it (minutes to days), which is not dsr's speed. Returns the file and the stores left out."""
    import yaml

    from dsr.config import DEFAULT_DATAMAP

    raw = yaml.safe_load(DEFAULT_DATAMAP.read_text(encoding="utf-8"))
    dropped = [name for name, store in raw["stores"].items() if store.get("connector") in REMOTE_CONNECTORS]
    for name in dropped:
        del raw["stores"][name]
    for recipient in (raw.get("recipients") or {}).values():  # told through the dropped store: by hand now
        notify = recipient.get("notify") or {}
        if notify.get("via") == "store" and notify.get("store") in dropped:
            recipient["notify"] = {"via": "manual"}
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return target, dropped


def _vacuum_analyze(engine: Engine) -> None:
    # Fresh rows: VACUUM sets their hint bits and visibility once, so no measured run pays for it;
    # ANALYZE gives the planner the real distribution (one big account among small ones).
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM (ANALYZE)"))


def _check_indexes(engine: Engine) -> None:
    from dsr.demo import portal

    with engine.connect() as conn:
        found = conn.execute(text("SELECT tablename, indexdef FROM pg_indexes WHERE schemaname = 'public'"))
        indexed = {(r.tablename, r.indexdef.split("(")[-1].rstrip(")").strip('"')) for r in found}
    missing = [f"{t.name}.{c.name}" for t in portal.metadata.sorted_tables for c in t.columns
               if c.foreign_keys and (t.name, c.name) not in indexed]
    if missing:
        raise SystemExit(f"no index on {', '.join(missing)}: the store would be scanned, not measured")


def floor_queries(store: Any, subject_key: int) -> tuple[tuple[str, str], ...]:
    """For each table of the SQL store, ``SELECT *`` of the subject's rows, by the same references
    the data map gives the connector (``account_id`` = the subject's account id; invoice lines by
    their invoices), but written by hand: the plain query a DBA would type."""
    roots = {ident["table"] for ident in store.identities.values()}

    def where(name: str) -> str:
        table = store.tables[name]
        if name in roots:
            return f'"{table.options.get("key", "id")}" = {int(subject_key)}'
        conditions = []
        for column, targets in (table.options.get("references") or {}).items():
            for target in targets if isinstance(targets, list) else [targets]:  # a list: any of them
                other, _, other_column = str(target).partition(".")
                if other in roots and other_column == store.tables[other].options.get("key", "id"):
                    conditions.append(f'"{column}" = {int(subject_key)}')
                else:
                    sub = f'SELECT "{other_column}" FROM "{other}" WHERE {where(other)}'  # noqa: S608  (names from the map)
                    conditions.append(f'"{column}" IN ({sub})')
        return " OR ".join(conditions)

    return tuple((name, f'SELECT * FROM "{name}" WHERE {where(name)}') for name in store.tables)  # noqa: S608

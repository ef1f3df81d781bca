"""The floor and the cases. Each function runs in a process of its own (see ``bench.harness``).

The floor is PostgreSQL's own speed: ``COPY (SELECT * FROM t WHERE <the subject's rows>) TO STDOUT
(FORMAT csv)`` for every table of the ``portal_db`` store, read through psycopg and written to a
file, summed over the tables. Every case is reported as a ratio to it, measured in the same run.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from bench.app import POLL, App, Processes, environment
from bench.harness import Context, Figures, case, stopwatch


def copy_floor(ctx: Context) -> Figures:
    """The subject's rows of every table as CSV by PostgreSQL alone: one COPY per table."""
    import psycopg
    from sqlalchemy.engine import make_url

    dsn = make_url(ctx.store_url).set(drivername="postgresql").render_as_string(hide_password=False)
    rows = 0
    with stopwatch() as watch, psycopg.connect(dsn) as conn:
        for table, query in ctx.floor_queries:
            with (ctx.work_dir / f"{table}.csv").open("wb") as out, conn.cursor() as cursor:
                with cursor.copy(f"COPY ({query}) TO STDOUT (FORMAT csv)") as copy:
                    for chunk in copy:
                        out.write(chunk)
                rows += cursor.rowcount
    return Figures(watch.seconds, rows)


def delete_floor(ctx: Context) -> Figures:
    """The floor of erasure: ``DELETE`` of the subject's rows (the floor's own ``WHERE``) in every table
    of the store, and of the rows of other tables that reference them (e.g. the media index), the
    referencing tables first, in one transaction, committed. A case timed beside it changes the store,
    so it registers with ``resets_store=True`` (see bench/README.md)."""
    import psycopg
    from sqlalchemy import MetaData, create_engine
    from sqlalchemy.engine import make_url

    engine = create_engine(ctx.store_url)
    reflected = MetaData()
    reflected.reflect(engine)
    engine.dispose()
    where = {name: query.split(" WHERE ", 1)[1] for name, query in ctx.floor_queries}
    for table in reflected.sorted_tables:  # parents first: a child's condition names its parent's
        if table.name in where:
            continue
        parents = [fk for fk in table.foreign_keys if fk.column.table.name in where]
        refs = [f'"{fk.parent.name}" IN (SELECT "{fk.column.name}" FROM "{fk.column.table.name}" '  # noqa: S608
                f'WHERE {where[fk.column.table.name]})' for fk in parents]
        if refs:
            where[table.name] = " OR ".join(refs)
    statements = [f'DELETE FROM "{t.name}" WHERE {where[t.name]}'  # noqa: S608  (names from the catalog)
                  for t in reversed(reflected.sorted_tables) if t.name in where]
    dsn = make_url(ctx.store_url).set(drivername="postgresql").render_as_string(hide_password=False)
    rows = 0
    with psycopg.connect(dsn) as conn, stopwatch() as watch, conn.transaction(), conn.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)
            rows += cursor.rowcount
    return Figures(watch.seconds, rows)


def _portal_store(ctx: Context) -> Any:
    os.environ["DSR_PORTAL_DB_URL"] = ctx.store_url
    from dsr.config import DEFAULT_DATAMAP
    from dsr.datamap import load
    from dsr.stores import validate_store

    return load(DEFAULT_DATAMAP, instance_dir=ctx.work_dir, validate_store=validate_store).stores["portal_db"]


def _collect(ctx: Context, rows_only: bool) -> Figures:
    import sqlalchemy.dialects.postgresql.psycopg  # noqa: F401  (a running worker has it loaded)

    from dsr.exports.csv_files import CsvDirectorySink
    from dsr.exports.disclosure import DisclosingSink
    from dsr.exports.json_files import add_json
    from dsr.stores import ConnectorContext, Subject
    from dsr.stores.sql import SqlConnector

    store = _portal_store(ctx)
    subject = Subject.from_email(ctx.subject_email)
    inner: Any = CsvDirectorySink(ctx.work_dir / "out")
    if rows_only:
        inner = _RowsOnly(inner)
    with stopwatch() as watch:
        # As a worker's job does it: a fresh connector, the identities resolved, then the export;
        # then the JSON twins, as the package step writes them: the data files are CSV + JSON.
        connector = SqlConnector(store, ConnectorContext(ctx.work_dir))
        subject = Subject({**subject.identities, **connector.resolve(subject)})
        result = connector.collect(subject, DisclosingSink(inner, store))
        connector.close()
        add_json(ctx.work_dir / "out")
    return Figures(watch.seconds, result.total, notes={"found": dict(result.found)})


class _RowsOnly:
    """A sink without ``accepts_raw_csv``/``open_csv``: the connector must take the row-by-row path."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def open_table(self, name: str, columns: Any, kinds: Any = None) -> Any:
        return self.inner.open_table(name, columns, kinds)

    def add_file(self, table: str, name: str, content: Any) -> None:
        self.inner.add_file(table, name, content)


@case("collect_sql", "SqlConnector.collect through DisclosingSink(CsvDirectorySink), then the JSON twins "
      "(add_json, as the package step writes them): the data files; PostgreSQL's COPY path",
      target_ratio=2.0, target_rss_mb=300.0)
def collect_sql(ctx: Context) -> Figures:
    return _collect(ctx, rows_only=False)


@case("collect_rows_path", "the same, forced onto the row-by-row path (sink without accepts_raw_csv)")
def collect_rows_path(ctx: Context) -> Figures:
    return _collect(ctx, rows_only=True)


def _erasable(ctx: Context) -> Context:
    """The floor's tables without those no erasure touches (category ``not_applicable``: our staff)."""
    from dataclasses import replace

    store = _portal_store(ctx)
    from dsr.config import DEFAULT_DATAMAP
    from dsr.datamap import load
    from dsr.stores import validate_store

    datamap = load(DEFAULT_DATAMAP, instance_dir=ctx.work_dir, validate_store=validate_store)
    staff = {name for name, t in store.tables.items() if datamap.categories[t.category].erasure == "not_applicable"}
    return replace(ctx, floor_queries=tuple((t, q) for t, q in ctx.floor_queries if t not in staff))


def erasure_floor(ctx: Context) -> Figures:
    """``delete_floor`` of the tables an erasure deletes from: all of the subject's but our staff's."""
    return delete_floor(_erasable(ctx))


def _erasure_world(ctx: Context) -> tuple[Any, Any, Any, dict[str, Any], dict[str, Any]]:
    """The media and portal_db connectors of the default map on the bench store, the subject, and a plan
    that deletes every table the floor deletes (so both remove the same rows; the default map's own
    plan keeps invoices and traffic data, which a DELETE floor of them would not)."""
    os.environ["DSR_MEDIA_DIR"] = str(ctx.media_dir)
    os.environ["DSR_PORTAL_DB_URL"] = ctx.store_url
    from dsr.datamap import load
    from dsr.stores import ConnectorContext, Subject, connector_class, validate_store
    from dsr.stores.base import TableErasure

    datamap = load(ctx.datamap, instance_dir=ctx.work_dir, validate_store=validate_store)
    made: dict[str, Any] = {}

    def connector_for(name: str) -> Any:
        if name not in made:
            spec = datamap.stores[name]
            made[name] = connector_class(spec.connector)(spec, ConnectorContext(ctx.work_dir, connector_for))
        return made[name]

    floor_tables = {table for table, _query in _erasable(ctx).floor_queries}
    sql_plan = {t: TableErasure("delete") for t in datamap.stores["portal_db"].tables if t in floor_tables}
    media_plan = {t: TableErasure("delete") for t in datamap.stores["media"].tables}
    subject = Subject.from_email(ctx.subject_email)
    # As in a preloaded worker (dsr.queue.warm_connectors): the stores' tables are reflected before the job.
    sql, media = connector_for("portal_db"), connector_for("media")
    sql.warm()
    media.warm()
    return media, sql, subject, sql_plan, media_plan


@case("erasure", "Art. 17 erasure of the subject as the erase jobs do it: the media store (files, then their index "
      "rows), then portal_db set-based in one transaction (every table the floor deletes); beside DELETE",
      floor=erasure_floor, resets_store=True, target_ratio=2.0, target_from=1_000)
def erasure(ctx: Context) -> Figures:
    media, sql, subject, sql_plan, media_plan = _erasure_world(ctx)
    with stopwatch() as watch:
        first = media.erase(subject, media_plan)
        second = sql.erase(subject, sql_plan)
    media.close()
    sql.close()
    # The floor deletes the index rows of the subject's files too: the files store's count is those.
    rows = sum(c.deleted + c.changed for c in second.tables.values()) + first.touched
    return Figures(watch.seconds, rows, notes={"files": first.touched})


@case("erasure_preview", "the preview of the same erasure (counts only, rolled back): what the DPO approves and "
      "what the check after the erasure runs again; beside DELETE", floor=erasure_floor, resets_store=True)
def erasure_preview(ctx: Context) -> Figures:
    media, sql, subject, sql_plan, media_plan = _erasure_world(ctx)
    with stopwatch() as watch:
        files = media.preview(subject, media_plan)
        result = sql.preview(subject, sql_plan)
    media.close()
    sql.close()
    return Figures(watch.seconds, sum(c.deleted for c in result.tables.values()) + files.touched)


def files_floor(ctx: Context) -> Figures:
    """The floor of a log store: every line of its files read (gunzip, readline), nothing parsed."""
    import gzip

    assert ctx.events_dir is not None
    lines = 0
    with stopwatch() as watch:
        for path in sorted(ctx.events_dir.glob("events-*.jsonl.gz")):
            with gzip.open(path, "rb") as f:
                for _line in f:
                    lines += 1
    return Figures(watch.seconds, lines)


@case("collect_analytics", "JsonlConnector.collect of the analytics events (link passes, prefilter), "
      "beside reading the same files", floor=files_floor)
def collect_analytics(ctx: Context) -> Figures:
    """The default map's analytics store over an export of ``size`` events (``bench.data.build_events``):
    the subject's events, and those before a login linked through the visitor ID, into CSV."""
    from dataclasses import replace

    from dsr.config import DEFAULT_DATAMAP
    from dsr.datamap import load
    from dsr.exports.csv_files import CsvDirectorySink
    from dsr.exports.disclosure import DisclosingSink
    from dsr.stores import ConnectorContext, Subject, validate_store
    from dsr.stores.jsonl import JsonlConnector

    assert ctx.events_dir is not None
    os.environ["DSR_PORTAL_DB_URL"] = ctx.store_url
    store = load(DEFAULT_DATAMAP, instance_dir=ctx.work_dir, validate_store=validate_store).stores["analytics"]
    store = replace(store, connection={**store.connection, "path": str(ctx.events_dir)})
    connector = JsonlConnector(store, ConnectorContext(ctx.work_dir))
    sink = DisclosingSink(CsvDirectorySink(ctx.work_dir / "out"), store)
    with stopwatch() as watch:
        result = connector.collect(Subject({"customer_id": "K00000001"}), sink)
    # rows: the lines searched (the export holds ``size`` events), as the floor reads them all.
    return Figures(watch.seconds, ctx.size, notes={"found": dict(result.found)})


@case("access_end_to_end", "access request through the app: verified -> package ready, one `dsr worker` process")
def access_end_to_end(ctx: Context) -> Figures:
    """Submit and verify through the API (Flask test client), a separate ``dsr worker`` does the jobs.

    Timed: from the verify call until the request is completed (the ZIP is written and recorded),
    with the worker already running and idle, as in production. RSS: the worker's peak, its forked
    work horses included (reported by the worker process itself, see ``bench.worker``).
    """
    return one_request(ctx, workers=1)


def one_request(ctx: Context, workers: int) -> Figures:
    """One access request of the subject, done by ``workers`` idle ``dsr worker`` processes."""
    from dsr.models import RequestStatus

    app = App(ctx)
    level = os.environ.get("BENCH_WORKER_LOG_LEVEL", "WARNING")  # INFO: RQ's per-job lines in the logs
    procs = Processes(ctx, app.env, ["--log-level", level, "worker"], workers)
    try:
        procs.wait_workers(app.connection, app.context.queue)
        request_id = app.submit(ctx.subject_email)
        started = time.perf_counter()
        app.verify(request_id)
        deadline = time.monotonic() + ctx.timeout
        while (status := app.status(request_id)) not in (RequestStatus.COMPLETED, RequestStatus.FAILED):
            procs.check()
            if time.monotonic() > deadline:
                raise RuntimeError(f"request still {status}")
            time.sleep(POLL)
        seconds = time.perf_counter() - started
        detail = app.detail(request_id)
        if status != RequestStatus.COMPLETED:
            raise RuntimeError(f"request {status}: {[(t['store'], t['status'], t['error']) for t in detail['tasks']]}")
        artifacts = app.artifacts(request_id)
        assert len(artifacts) == 1 and artifacts[0]["kind"] == "package", artifacts
        counts = {t["store"]: t["counts"].get("total", 0) for t in detail["tasks"]}
    except Exception as exc:
        procs.stop()
        raise RuntimeError(f"{exc}\n--- end of the workers' logs ---\n{procs.tail()}") from exc
    finally:
        procs.stop()
        app.close()
    return Figures(seconds, counts.get("portal_db", 0), rss_kb=procs.peak_rss_kb(),
                   notes={"stores": counts, "package_bytes": artifacts[0]["size"]})


@case("pdf_report", "the Art. 15 report of the subject's package (all stores): report_data + build_report",
      target_seconds=10.0, target_pages=100)
def pdf_report(ctx: Context) -> Figures:
    """Rendering the PDF alone, in this one process (one core), from the collected folders.

    Set-up, not timed: every store of the data map collected as a job does it (identities resolved,
    ``DisclosingSink(CsvDirectorySink)``). Timed: ``report_data`` (previews read from the CSVs) and
    ``build_report`` (WeasyPrint), as ``dsr.domain.packaging`` calls them.
    """
    from datetime import UTC, datetime, timedelta

    from dsr import runtime as runtimes
    from dsr.config import Settings
    from dsr.exports.csv_files import CsvDirectorySink
    from dsr.exports.disclosure import DisclosingSink
    from dsr.exports.report import build_report, report_data
    from dsr.stores import Subject

    os.environ.update(environment(ctx))
    rt = runtimes.build(Settings.from_env())
    outputs: dict[str, Path] = {}
    tasks: list[dict[str, Any]] = []
    rows = 0
    try:
        for store in rt.datamap.stores:
            subject = rt.resolve(Subject.from_email(ctx.subject_email), store)
            connector = rt.connector(store)
            outputs[store] = ctx.work_dir / "collected" / store
            sink = DisclosingSink(CsvDirectorySink(outputs[store]), connector.store)
            result = connector.collect(subject, sink)
            tasks.append({"store": store, "counts": {"found": result.found, "files": result.files,
                                                     "total": result.total, "redactions": sink.summary(),
                                                     "notes": result.notes}})
            rows += result.total if store == "portal_db" else 0
        now = datetime.now(UTC)
        request = {"reference": "DSR-BENCH-0001", "type": "access", "received_at": now - timedelta(days=1),
                   "legal_end": now + timedelta(days=29), "answered_at": now}
        cpu = time.process_time()
        with stopwatch() as watch:
            data = report_data(rt.datamap, request, tasks, outputs, "de", formats=("csv", "json"))
            info = build_report(data, ctx.work_dir / "report" / "report.pdf")
        cpu = time.process_time() - cpu  # beside the wall time: on a busy machine the two part
    finally:
        rt.close()
    return Figures(watch.seconds, rows, pages=info.pages, notes={"pdf_bytes": info.size, "cpu_s": round(cpu, 3)})


def project_dir() -> Path:
    return Path(__file__).resolve().parent.parent

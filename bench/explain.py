"""``python -m bench.explain --url URL``: where the time of the SQL export goes, table by table.

For each table of the ``portal_db`` store: the seconds of the connector's own ``COPY (SELECT ...)``
statement (disclosure rules and CSV forms in SQL, ORDER BY the key) beside the floor's plain
``SELECT *`` of the same rows, both read through psycopg; with ``--analyze`` also the plan of the
connector's statement (``EXPLAIN (ANALYZE, BUFFERS)``). Use it on a store kept by
``python -m bench.run --keep --sizes 1000000`` (``postgresql+psycopg://postgres@127.0.0.1:5432/dsr_bench``).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.data import SUBJECT, floor_queries, require_loopback


def _timed(conn: Any, query: str, params: Any = None, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        with conn.cursor() as cursor, cursor.copy(f"COPY ({query}) TO STDOUT (FORMAT csv)", params) as copy:
            for _chunk in copy:
                pass
        best = min(best, time.perf_counter() - started)
    return best


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.explain", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/dsr_bench")
    p.add_argument("--analyze", action="store_true", help="print EXPLAIN (ANALYZE, BUFFERS) of each statement")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    require_loopback(args.url, "PostgreSQL")
    os.environ["DSR_PORTAL_DB_URL"] = args.url
    with tempfile.TemporaryDirectory(prefix="dsr-bench-explain-") as scratch:
        _explain(args, Path(scratch))


def _explain(args: argparse.Namespace, scratch: Path) -> None:
    from sqlalchemy import select

    from dsr.config import DEFAULT_DATAMAP
    from dsr.datamap import load
    from dsr.exports.csv_files import CsvDirectorySink
    from dsr.exports.disclosure import DisclosingSink
    from dsr.stores import ConnectorContext, Subject, copy_sql, validate_store
    from dsr.stores.sql import SqlConnector

    store = load(DEFAULT_DATAMAP, instance_dir=scratch, validate_store=validate_store).stores["portal_db"]
    connector = SqlConnector(store, ConnectorContext(scratch))
    subject = Subject.from_email(SUBJECT)
    subject = Subject({**subject.identities, **connector.resolve(subject)})
    sink = DisclosingSink(CsvDirectorySink(scratch), store)
    tables = connector._reflect()
    with connector.engine.connect() as conn:
        key = conn.exec_driver_sql("SELECT id FROM accounts WHERE lower(email) = %(e)s", {"e": SUBJECT}).scalar_one()
        floors = dict(floor_queries(store, int(key)))
        raw: Any = conn.connection.driver_connection  # psycopg.Connection
        print(f"{'table':<18} {'dsr s':>8} {'floor s':>8} {'ratio':>6}")
        for name, table in tables.items():
            rules = sink.plan(name, [c.name for c in table.columns])
            stmt = select(*(copy_sql.expression(table.c[r.name], r, table).label(r.name) for r in rules))
            stmt = stmt.where(connector.membership(name, subject)).order_by(connector._order(name, table))
            compiled = stmt.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
            ours, floor = _timed(raw, str(compiled), compiled.params, args.repeat), _timed(raw, floors[name])
            print(f"{name:<18} {ours:8.3f} {floor:8.3f} {ours / floor if floor else 0:6.2f}")
            if args.analyze:
                for (line,) in raw.execute(f"EXPLAIN (ANALYZE, BUFFERS) {compiled}", compiled.params):
                    print("    " + line)
    connector.close()


if __name__ == "__main__":
    main()

"""``python -m bench.run`` (``make bench``): build the data per size, run the floor and every case,
print the table and append it to ``bench/RESULTS.md``.

Sizes and repeats come from the command line or the environment (``BENCH_SIZES=1000,10000``,
``BENCH_REPEAT``, ``BENCH_REPEAT_LARGE``, ``BENCH_CASES``); ``--quick`` is 1,000 and 10,000 rows.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

from bench import cases as _cases  # registers the cases
from bench import data, report
from bench.harness import CASES, Context, measure, run_once

DEFAULT_SIZES = (1_000, 10_000, 100_000, 1_000_000)
QUICK_SIZES = (1_000, 10_000)
LARGE = 1_000_000  # from here on, one run per case unless --repeat-large says otherwise


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v.replace("_", "")) for v in text.split(",") if v.strip())


def parse(argv: list[str]) -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=_ints, default=_ints(env("BENCH_SIZES", "")) or DEFAULT_SIZES,
                   help="the subject's rows, comma-separated (default 1000,10000,100000,1000000)")
    p.add_argument("--quick", action="store_true", help="sizes 1000,10000")
    p.add_argument("--cases", default=env("BENCH_CASES", ",".join(CASES)),
                   help=f"comma-separated, of: {', '.join(CASES)}")
    p.add_argument("--repeat", type=int, default=int(env("BENCH_REPEAT", "3")),
                   help="runs per case below 1,000,000 rows; the best time counts (default 3)")
    p.add_argument("--repeat-large", type=int, default=int(env("BENCH_REPEAT_LARGE", "1")),
                   help="runs per case from 1,000,000 rows (default 1)")
    p.add_argument("--subjects", type=int, default=20, help="accounts in the store (default 20)")
    p.add_argument("--other-rows", type=int, default=1000, help="usage records of every other account (default 1000)")
    p.add_argument("--pg-url", default=env("BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"),
                   help="any database of the PostgreSQL server; dsr_bench and dsr_bench_meta are created beside it")
    p.add_argument("--db-name", default=env("BENCH_DB_NAME", "dsr_bench"),
                   help="the store database's name (the metadata database gets _meta appended); "
                        "distinct names let two runs share a server (default dsr_bench)")
    p.add_argument("--redis-url", default=env("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"))
    p.add_argument("--timeout", type=float, default=600.0, help="seconds one run of a case may take")
    p.add_argument("--budget", type=float, default=840.0,
                   help="seconds: no further size is started after this (default 14 min)")
    p.add_argument("--no-record", action="store_true", help="print only; leave RESULTS.md and results.json alone")
    p.add_argument("--keep", action="store_true", help="keep the dsr_bench databases afterwards")
    p.add_argument("--fail-on-regression", action="store_true", help="exit 1 on a regression or a missed target")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes = QUICK_SIZES
    args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in args.cases if c not in CASES]
    if unknown:
        p.error(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(CASES)}")
    return args


def command(argv: list[str]) -> str:
    shown = os.path.relpath(sys.executable)
    shown = sys.executable if shown.startswith("..") else shown
    line = " ".join([shown, "-m", "bench.run", *map(shlex.quote, argv)])
    return f"make bench  # {line}" if os.environ.get("MAKELEVEL") else line


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    data.require_loopback(args.pg_url, "PostgreSQL")
    data.require_loopback(args.redis_url.replace("redis://", "postgresql://", 1), "Redis")
    started = time.monotonic()
    dbs = data.Databases(args.pg_url, args.db_name, f"{args.db_name}_meta")
    scratch = Path(tempfile.mkdtemp(prefix="dsr-bench-"))
    queue = f"dsr-bench-{uuid.uuid4().hex[:8]}"
    info = {"machine": report.machine(), "versions": report.versions(dbs.server_version(), _redis_version(args))}
    print(f"dsr bench: sizes {', '.join(f'{s:,}' for s in args.sizes)}; cases {', '.join(args.cases)}; "
          f"{info['machine']['cores']} cores, {info['machine']['memory_gib']} GiB", flush=True)
    rows: list[report.Row] = []
    notes: list[str] = []
    try:
        if "access_end_to_end" in args.cases:
            from dsr.migrate import upgrade

            dbs.recreate(dbs.meta_name)
            upgrade(dbs.meta_url)
        dbs.recreate(dbs.store_name)
        logs = scratch / "logs"
        data.build_logs(logs, args.subjects)
        datamap, dropped = data.local_datamap(scratch / "datamap.yaml")
        if dropped and "access_end_to_end" in args.cases:
            notes.append(f"access_end_to_end: the default data map without the processor store(s) "
                         f"{', '.join(dropped)} (they answer on the processor's schedule, not dsr's)")
        for size in args.sizes:
            if time.monotonic() - started > args.budget:
                notes.append(f"size {size:,} skipped: the budget of {args.budget:.0f} s was spent")
                print(notes[-1], flush=True)
                continue
            rows += _one_size(args, dbs, scratch, logs, datamap, queue, size, notes)
    finally:
        _purge(args.redis_url, queue)
        if not args.keep:
            dbs.drop(dbs.store_name)
            dbs.drop(dbs.meta_name)
        dbs.dispose()
        shutil.rmtree(scratch, ignore_errors=True)

    elapsed = time.monotonic() - started
    flagged = report.regressions(rows, report.history()) + _targets(rows)
    notes.append(f"total time of the run {elapsed:.0f} s")
    print("\n" + report.table(rows) + "\n")
    for line in flagged:
        print(line)
    print(f"total {elapsed:.0f} s")
    if not args.no_record:
        report.record(report.now(), command(argv), info, rows, notes, flagged)
        print(f"appended to {report.RESULTS_MD} and {report.RESULTS_JSON.name}")
    return 1 if flagged and args.fail_on_regression else 0


def _one_size(args: argparse.Namespace, dbs: data.Databases, scratch: Path, logs: Path, datamap: Path, queue: str,
              size: int, notes: list[str]) -> list[report.Row]:
    media = scratch / "media"
    built = data.build_store(dbs.store_url, size, args.subjects, args.other_rows, media)
    os.environ["DSR_PORTAL_DB_URL"] = dbs.store_url  # the data map's URL of portal_db (only read, not used)
    from dsr.config import DEFAULT_DATAMAP
    from dsr.datamap import load
    from dsr.stores import validate_store

    store = load(DEFAULT_DATAMAP, instance_dir=scratch, validate_store=validate_store).stores["portal_db"]
    ctx = Context(size=size, store_url=dbs.store_url, subject_email=data.SUBJECT, subject_key=built.subject_key,
                  floor_queries=data.floor_queries(store, built.subject_key), meta_url=dbs.meta_url,
                  redis_url=args.redis_url, queue=queue, log_dir=logs, media_dir=media, datamap=datamap,
                  project_dir=_cases.project_dir(), work_dir=scratch / "run", timeout=args.timeout)
    total = sum(built.counts.values())
    notes.append(f"{size:,}: store of {total:,} rows ({args.subjects} accounts), built in {built.seconds:.1f} s")
    print(f"\n{size:,} rows: store of {total:,} rows built in {built.seconds:.1f} s", flush=True)
    repeat = args.repeat_large if size >= LARGE else args.repeat
    run_once(_cases.copy_floor, replace(ctx, work_dir=scratch / "warm-up"))  # caches warm for whoever is first
    out = []
    for name in args.cases:
        # The floor again right before each case, as often: a busy moment of the machine hits both alike.
        floor = measure(_cases.copy_floor, ctx, repeat)
        print(f"  {'copy floor':<20} {floor.seconds:8.3f} s  {floor.rows:>10,} rows  {floor.rss_mb:6.0f} MB",
              flush=True)
        m = measure(CASES[name].run, ctx, repeat)
        row = report.Row(name, size, m.rows, floor.seconds, m.seconds, m.rss_mb, floor.rss_mb, len(m.runs))
        print(f"  {name:<20} {m.seconds:8.3f} s  {m.rows:>10,} rows  {m.rss_mb:6.0f} MB  ratio {row.ratio:.2f}",
              flush=True)
        if m.rows != floor.rows:
            notes.append(f"ROWS DIFFER {name} at {size:,}: {m.rows:,} exported, the floor {floor.rows:,}")
            print("  " + notes[-1], flush=True)
        out.append(row)
    return out


def _targets(rows: list[report.Row]) -> list[str]:
    missed = []
    for r in rows:
        spec = CASES[r.case]
        if r.size < spec.target_from:
            continue
        if spec.target_ratio is not None and r.ratio > spec.target_ratio:
            missed.append(f"TARGET MISSED {r.case} at {r.size:,} rows: ratio {r.ratio:.2f} > {spec.target_ratio:.1f}")
        if spec.target_rss_mb is not None and r.rss_mb >= spec.target_rss_mb:
            missed.append(f"TARGET MISSED {r.case} at {r.size:,} rows: peak RSS {r.rss_mb:.0f} MB "
                          f">= {spec.target_rss_mb:.0f} MB")
    return missed


def _redis_version(args: argparse.Namespace) -> str:
    import redis

    client = redis.Redis.from_url(args.redis_url, socket_connect_timeout=3)
    try:
        return str(client.info("server").get("redis_version", "?"))
    finally:
        client.close()


def _purge(redis_url: str, name: str) -> None:
    """Leave nothing of this run's queue in Redis: jobs, registries, the queue itself."""
    import redis
    from rq import Queue

    from dsr.queue import purge_queue

    connection = redis.Redis.from_url(redis_url, socket_connect_timeout=3)
    try:
        purge_queue(Queue(name, connection=connection))
    except redis.RedisError as exc:
        print(f"warning: could not purge queue {name}: {exc}", file=sys.stderr)
    finally:
        connection.close()


if __name__ == "__main__":
    sys.exit(main())

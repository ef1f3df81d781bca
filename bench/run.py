"""``python -m bench.run`` (``make bench``): build the data per size, run the floor and every case,
then the load cases (scale-out on 1, 2 and 4 workers, intake at a fixed rate), print the tables and
append them to ``bench/RESULTS.md``.

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
from typing import Any

from bench import cases as _cases  # registers the cases
from bench import data, intake, report, request_list, scale  # noqa: F401  (register the load cases)
from bench.harness import (
    CASES,
    LOAD_CASES,
    CaseFailed,
    Context,
    LoadCase,
    LoadFigures,
    exit_on_sigterm,
    measure,
    run_once,
)

DEFAULT_SIZES = (1_000, 10_000, 100_000, 1_000_000)
SMALL_REQUESTS = 20  # 1,000 (issue 5) once a small request costs well under a second: see bench/README.md
QUICK_SIZES = (1_000, 10_000)
LARGE = 1_000_000  # from here on, one run per case unless --repeat-large says otherwise
MIN_CAP = 30.0  # seconds: a setting shorter than this would measure start-up, not throughput
SETUP_ALLOWANCE = 300.0  # seconds a load case's process may take beyond --load-timeout (submitting, starting)


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v.replace("_", "")) for v in text.split(",") if v.strip())


def parse(argv: list[str]) -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=_ints, default=_ints(env("BENCH_SIZES", "")) or DEFAULT_SIZES,
                   help="the subject's rows, comma-separated (default 1000,10000,100000,1000000)")
    p.add_argument("--quick", action="store_true", help="sizes 1000,10000")
    every = [*CASES, *LOAD_CASES]
    p.add_argument("--cases", default=env("BENCH_CASES", ",".join(every)),
                   help=f"comma-separated, of: {', '.join(every)} (default: all)")
    p.add_argument("--repeat", type=int, default=int(env("BENCH_REPEAT", "3")),
                   help="runs per case below 1,000,000 rows; the best time counts (default 3)")
    p.add_argument("--repeat-large", type=int, default=int(env("BENCH_REPEAT_LARGE", "1")),
                   help="runs per case from 1,000,000 rows (default 1)")
    p.add_argument("--workers", type=_ints, default=_ints(env("BENCH_WORKERS", "1,2,4")),
                   help="scale-out: numbers of `dsr worker` processes (default 1,2,4)")
    p.add_argument("--scale-size", type=int, default=None,
                   help="scale_one_request: the subject's rows (default: the largest of --sizes)")
    p.add_argument("--small-requests", type=int, default=int(env("BENCH_SMALL_REQUESTS", str(SMALL_REQUESTS))),
                   help=f"scale_small_requests: requests (subjects) per worker count (default {SMALL_REQUESTS})")
    p.add_argument("--small-rows", type=int, default=100, help="usage records of each small subject (default 100)")
    p.add_argument("--rate", type=float, default=float(env("BENCH_RATE", "200")),
                   help="intake: submissions per second offered (default 200)")
    p.add_argument("--duration", type=float, default=float(env("BENCH_DURATION", "15")),
                   help="intake: seconds of offered load (default 15)")
    p.add_argument("--load-timeout", type=float, default=300.0,
                   help="seconds one setting of a load case may work before it is cut off (default 300)")
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
    p.add_argument("--keep-files", action="store_true",
                   help="keep the scratch folder: the last run's worker logs (with BENCH_WORKER_LOG_LEVEL=INFO "
                        "each job and the package's timings), collected files and package")
    p.add_argument("--fail-on-regression", action="store_true", help="exit 1 on a regression or a missed target")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes = QUICK_SIZES
    args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in args.cases if c not in CASES and c not in LOAD_CASES]
    if unknown:
        p.error(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(every)}")
    if args.small_requests < 1 or not args.workers or min(args.workers) < 1 or args.rate <= 0 or args.duration <= 0:
        p.error("--small-requests, --workers, --rate and --duration must be positive")
    args.load = [c for c in args.cases if c in LOAD_CASES]
    args.cases = [c for c in args.cases if c in CASES]
    args.scale_size = args.scale_size or max(args.sizes)
    return args


def command(argv: list[str]) -> str:
    shown = os.path.relpath(sys.executable)
    shown = sys.executable if shown.startswith("..") else shown
    line = " ".join([shown, "-m", "bench.run", *map(shlex.quote, argv)])
    return f"make bench  # {line}" if os.environ.get("MAKELEVEL") else line


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    exit_on_sigterm()  # a stopped run still purges its queue and drops its databases
    data.require_loopback(args.pg_url, "PostgreSQL")
    data.require_loopback(args.redis_url.replace("redis://", "postgresql://", 1), "Redis")
    started = time.monotonic()
    dbs = data.Databases(args.pg_url, args.db_name, f"{args.db_name}_meta")
    scratch = Path(tempfile.mkdtemp(prefix="dsr-bench-"))
    queue = f"dsr-bench-{uuid.uuid4().hex[:8]}"
    info = {"machine": report.machine(), "versions": report.versions(dbs.server_version(), _redis_version(args))}
    print(f"dsr bench: sizes {', '.join(f'{s:,}' for s in args.sizes)}; cases "
          f"{', '.join([*args.cases, *args.load])}; {info['machine']['cores']} cores, "
          f"{info['machine']['memory_gib']} GiB", flush=True)
    rows: list[report.Row] = []
    load: list[report.LoadRow] = []
    notes: list[str] = []
    try:
        from dsr.migrate import upgrade

        dbs.recreate(dbs.meta_name)
        upgrade(dbs.meta_url)
        dbs.recreate(dbs.store_name)
        logs = scratch / "logs"
        data.build_logs(logs, args.subjects)
        datamap, dropped = data.local_datamap(scratch / "datamap.yaml")
        if dropped:
            notes.append(f"end-to-end, PDF and load cases: the default data map without the processor store(s) "
                         f"{', '.join(dropped)} (they answer on the processor's schedule, not dsr's)")
        base = Context(size=0, store_url=dbs.store_url, subject_email=data.SUBJECT, subject_key=0, floor_queries=(),
                       meta_url=dbs.meta_url, redis_url=args.redis_url, queue=queue, log_dir=logs,
                       media_dir=scratch / "media", datamap=datamap, project_dir=_cases.project_dir(),
                       work_dir=scratch / "run", timeout=args.timeout, keep_files=args.keep_files)
        largest = [LOAD_CASES[n] for n in args.load if LOAD_CASES[n].store == "largest"]
        for size in args.sizes if args.cases else ():
            if time.monotonic() - started > args.budget:
                notes.append(f"size {size:,} skipped: the budget of {args.budget:.0f} s was spent")
                print(notes[-1], flush=True)
                continue
            ctx = _build(args, dbs, base, size, notes)
            rows += _one_size(args, ctx, notes)
            if size == args.scale_size and largest:
                load += _load(args, ctx, largest, notes, started)
                largest = []
        if largest:  # the scale-out size was not among the sizes run
            load += _load(args, _build(args, dbs, base, args.scale_size, notes), largest, notes, started)
        alone = [LOAD_CASES[n] for n in args.load if LOAD_CASES[n].store is None]
        if alone:
            load += _load(args, base, alone, notes, started)
        many = [LOAD_CASES[n] for n in args.load if LOAD_CASES[n].store == "many"]  # the longest: last
        if many and time.monotonic() - started <= args.budget:
            load += _load(args, _build_many(args, dbs, base, notes), many, notes, started)
        elif many:
            notes.append(f"{', '.join(c.name for c in many)} skipped: the budget of {args.budget:.0f} s was spent")
            print(notes[-1], flush=True)
    finally:
        _purge(args.redis_url, queue)
        if not args.keep:
            dbs.drop(dbs.store_name)
            dbs.drop(dbs.meta_name)
        dbs.dispose()
        if args.keep_files:
            print(f"kept the files of the last run of each case in {scratch} (worker logs: run/worker/*.log)")
        else:
            shutil.rmtree(scratch, ignore_errors=True)

    elapsed = time.monotonic() - started
    load = report.with_speedups(load)
    past = report.history()
    flagged = (report.regressions(rows, past) + report.load_regressions(load, past) + _targets(rows)
               + _load_targets(load))
    notes.append(f"total time of the run {elapsed:.0f} s")
    if rows:
        print("\n" + report.table(rows))
    if load:
        print("\n" + report.load_table(load))
    print()
    for line in flagged:
        print(line)
    print(f"total {elapsed:.0f} s")
    if not args.no_record:
        report.record(report.now(), command(argv), info, rows, notes, flagged, load)
        print(f"appended to {report.RESULTS_MD} and {report.RESULTS_JSON.name}")
    return 1 if flagged and args.fail_on_regression else 0


def _build(args: argparse.Namespace, dbs: data.Databases, base: Context, size: int, notes: list[str]) -> Context:
    """The store with one subject of ``size`` rows among ``--subjects`` accounts."""
    built = data.build_store(dbs.store_url, size, args.subjects, args.other_rows, base.media_dir)
    total = sum(built.counts.values())
    notes.append(f"{size:,}: store of {total:,} rows ({args.subjects} accounts), built in {built.seconds:.1f} s")
    print(f"\n{size:,} rows: store of {total:,} rows built in {built.seconds:.1f} s", flush=True)
    events_dir = None
    if "collect_analytics" in args.cases:
        events_dir = base.work_dir.parent / f"events-{size}"
        started = time.perf_counter()
        written, mine = data.build_events(events_dir, size)
        notes.append(f"{size:,}: analytics export of {written:,} events ({mine:,} the subject's, "
                     f"{data.EVENT_DAYS} gzip files), built in {time.perf_counter() - started:.1f} s")
    return replace(base, size=size, subject_key=built.subject_key, events_dir=events_dir,
                   floor_queries=data.floor_queries(_portal_store(dbs.store_url, base.work_dir.parent),
                                                    built.subject_key))


def _build_many(args: argparse.Namespace, dbs: data.Databases, base: Context, notes: list[str]) -> Context:
    """The store of many small subjects: ``--small-requests`` accounts of ``--small-rows`` rows each."""
    n, rows = args.small_requests, args.small_rows
    built = data.build_store(dbs.store_url, rows, n, rows, base.media_dir)
    total = sum(built.counts.values())
    notes.append(f"small requests: store of {total:,} rows ({n:,} accounts of {rows} usage records), "
                 f"built in {built.seconds:.1f} s")
    print(f"\n{n:,} subjects of {rows} rows: store of {total:,} rows built in {built.seconds:.1f} s", flush=True)
    return replace(base, size=rows, subject_key=built.subject_key)


def _portal_store(store_url: str, scratch: Path) -> Any:
    os.environ["DSR_PORTAL_DB_URL"] = store_url  # the data map's URL of portal_db (only read, not used)
    from dsr.config import DEFAULT_DATAMAP
    from dsr.datamap import load
    from dsr.stores import validate_store

    return load(DEFAULT_DATAMAP, instance_dir=scratch, validate_store=validate_store).stores["portal_db"]


def _settings(args: argparse.Namespace, spec: LoadCase) -> list[tuple[str, dict[str, Any]]]:
    common = {"small_requests": args.small_requests, "duration": args.duration}
    if spec.settings == "workers":
        return [(f"{k} worker{'s' if k > 1 else ''}", {**common, "workers": k}) for k in args.workers]
    if spec.settings == "once":
        return [("once", common)]
    return [(f"{args.rate:g}/s offered", {**common, "rate": args.rate})]


def _load(args: argparse.Namespace, ctx: Context, specs: list[LoadCase], notes: list[str],
          started: float) -> list[report.LoadRow]:
    """Every setting of each load case, once, each in a fresh process bounded by --load-timeout."""
    out = []
    for spec in specs:
        for setting, options in _settings(args, spec):
            if time.monotonic() - started > args.budget:
                notes.append(f"{spec.name} ({setting}) skipped: the budget of {args.budget:.0f} s was spent")
                print(notes[-1], flush=True)
                continue
            # Cut off at --load-timeout, or sooner when the run's budget (plus a minute) would be spent.
            cap = min(args.load_timeout, max(MIN_CAP, started + args.budget + 60 - time.monotonic()))
            print(f"  {spec.name} ({setting}) ...", flush=True)
            run = replace(ctx, options={**options, "cap": cap}, timeout=cap + SETUP_ALLOWANCE)
            try:
                f: LoadFigures = run_once(spec.run, run)
            except CaseFailed as exc:
                notes.append(f"FAILED {spec.name} ({setting}): {str(exc).splitlines()[0]}")
                print(f"  {notes[-1]}\n{exc}", flush=True)
                continue
            row = report.LoadRow(spec.name, setting, options.get("workers"), f.done, f.errors, f.seconds,
                                 (f.rss_kb or 0) / 1024, f.rows, None, f.offered_per_s, f.p50_ms, f.p99_ms, f.max_ms)
            latency = f", p50 {f.p50_ms:.1f} ms, p99 {f.p99_ms:.1f} ms" if f.p99_ms is not None else ""
            print(f"  {spec.name} ({setting}): {f.done:,} done, {f.errors:,} errors in {f.seconds:.2f} s: "
                  f"{row.per_s:,.2f}/s{latency}", flush=True)
            for note in f.notes.get("report", []):
                notes.append(f"{spec.name} ({setting}): {note}")
                print(f"    {note}", flush=True)
            out.append(row)
    return out


def _one_size(args: argparse.Namespace, ctx: Context, notes: list[str]) -> list[report.Row]:
    repeat = args.repeat_large if ctx.size >= LARGE else args.repeat
    run_once(_cases.copy_floor, replace(ctx, work_dir=ctx.work_dir.parent / "warm-up"))  # caches warm for the first
    out = []
    for name in args.cases:
        spec = CASES[name]
        floor_of = spec.floor or _cases.copy_floor
        # A case that changes the store (erasure) gets it rebuilt, untimed, before each run and its floor's.
        before = (lambda: _rebuild(args, ctx)) if spec.resets_store else None
        # The floor again right before each case, as often: a busy moment of the machine hits both alike.
        floor = measure(floor_of, ctx, repeat, before)
        label = "copy floor" if floor_of is _cases.copy_floor else floor_of.__name__
        print(f"  {label:<20} {floor.seconds:8.3f} s  {floor.rows:>10,} rows  {floor.rss_mb:6.0f} MB", flush=True)
        m = measure(spec.run, ctx, repeat, before)
        if before is not None:
            before()  # whole again for the cases after it
        row = report.Row(name, ctx.size, m.rows, floor.seconds, m.seconds, m.rss_mb, floor.rss_mb, len(m.runs),
                         m.pages)
        pages = f"  {m.pages} pages" if m.pages is not None else ""
        pages += f"  (CPU {m.notes['cpu_s']:.3f} s)" if "cpu_s" in m.notes else ""
        print(f"  {name:<20} {m.seconds:8.3f} s  {m.rows:>10,} rows  {m.rss_mb:6.0f} MB  ratio {row.ratio:.2f}{pages}",
              flush=True)
        if "cpu_s" in m.notes:
            notes.append(f"{name} at {ctx.size:,}: {m.notes['cpu_s']:.2f} s CPU of {m.seconds:.2f} s")
        if m.rows != floor.rows:
            notes.append(f"ROWS DIFFER {name} at {ctx.size:,}: {m.rows:,} exported, the floor {floor.rows:,}")
            print("  " + notes[-1], flush=True)
        out.append(row)
    return out


def _rebuild(args: argparse.Namespace, ctx: Context) -> None:
    built = data.build_store(ctx.store_url, ctx.size, args.subjects, args.other_rows, ctx.media_dir)
    if built.subject_key != ctx.subject_key:
        raise SystemExit("the rebuilt store gave the subject another key: the floor's queries would miss")


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
        if spec.target_seconds is not None and r.dsr_s >= spec.target_seconds:
            missed.append(f"TARGET MISSED {r.case} at {r.size:,} rows: {r.dsr_s:.1f} s >= {spec.target_seconds:.0f} s")
        if spec.target_pages is not None and r.pages is not None and r.pages >= spec.target_pages:
            missed.append(f"TARGET MISSED {r.case} at {r.size:,} rows: {r.pages} pages >= {spec.target_pages}")
    return missed


def _load_targets(rows: list[report.LoadRow]) -> list[str]:
    missed = []
    for r in rows:
        spec = LOAD_CASES[r.case]
        if spec.target_speedup is not None and r.workers == 2 and r.speedup is not None \
                and r.speedup < spec.target_speedup:
            missed.append(f"TARGET MISSED {r.case}: speed-up {r.speedup:.2f}x from 1 to 2 workers "
                          f"< {spec.target_speedup:.1f}x")
        if spec.target_p99_ms is not None and r.p99_ms is not None and r.p99_ms >= spec.target_p99_ms:
            missed.append(f"TARGET MISSED {r.case} ({r.setting}): p99 {r.p99_ms:.1f} ms >= {spec.target_p99_ms:.0f} ms")
        if r.errors:
            missed.append(f"ERRORS {r.case} ({r.setting}): {r.errors:,} of {r.done + r.errors:,} requests failed")
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

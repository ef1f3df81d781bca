"""Scale-out: the same work on 1, 2 and 4 ``dsr worker`` processes (``--workers``).

- ``scale_one_request``: one access request of the big subject (the largest size of the run),
  spanning every store: its collect jobs run side by side, then one assemble job builds the package.
- ``scale_small_requests``: many small requests, one per subject of the "many" store (``--small-requests``
  accounts of ``--small-rows`` usage records each). All are submitted and verified through the API
  first (untimed; their jobs wait in Redis), then the workers start together (``bench.worker``'s
  gate) and the clock runs from the first worker's registration with RQ (after its start-up) until
  every request has ended. Throughput: completed requests per second.
"""

from __future__ import annotations

import os
import time

from bench.app import App, Processes
from bench.cases import one_request
from bench.harness import Context, LoadFigures, load_case

PROGRESS = 15.0  # seconds between progress lines of a long setting


@load_case("scale_one_request", "one access request spanning all stores (largest size): 1, 2, 4 workers",
           store="largest", settings="workers")
def scale_one_request(ctx: Context) -> LoadFigures:
    f = one_request(ctx, workers=int(ctx.options["workers"]))
    return LoadFigures(f.seconds, 1, rows=f.rows, rss_kb=f.rss_kb, notes=f.notes)


@load_case("scale_small_requests", "many small access requests (one per subject): throughput on 1, 2, 4 workers",
           store="many", settings="workers", target_speedup=1.7)
def scale_small_requests(ctx: Context) -> LoadFigures:
    from sqlalchemy import create_engine, text

    from dsr.queue import purge_queue

    workers, count, cap = int(ctx.options["workers"]), int(ctx.options["small_requests"]), float(ctx.options["cap"])
    engine = create_engine(ctx.store_url)
    with engine.connect() as conn:
        emails = list(conn.execute(text("SELECT email FROM accounts ORDER BY id LIMIT :n"), {"n": count}).scalars())
    engine.dispose()
    app = App(ctx)
    purge_queue(app.context.queue)  # nothing left over from an earlier setting that was cut off
    procs: Processes | None = None
    try:
        started = time.perf_counter()
        ids = []
        for email in emails:
            request_id = app.submit(email)
            app.verify(request_id)
            ids.append(request_id)
        submitted = time.perf_counter() - started
        print(f"    {len(ids):,} requests submitted and verified in {submitted:.1f} s; "
              f"starting {workers} worker(s)", flush=True)
        level = os.environ.get("BENCH_WORKER_LOG_LEVEL", "WARNING")
        procs = Processes(ctx, app.env, ["--log-level", level, "worker"], workers, gated=True)
        procs.wait_ready()
        procs.open_gate()
        gate = time.perf_counter()
        # The clock starts when the first worker registers with RQ: after its start-up (runtime,
        # preload), which every worker pays once, not per request.
        procs.wait_workers(app.connection, app.context.queue, count=1)
        started = time.perf_counter()
        deadline, shown = time.monotonic() + cap, time.monotonic()
        while (done := sum((ended := app.ended(ids)).values())) < len(ids):
            procs.check()
            if time.monotonic() > deadline:
                break
            if time.monotonic() - shown > PROGRESS:
                shown = time.monotonic()
                print(f"    {done:,} of {len(ids):,} ended after {time.perf_counter() - started:.0f} s", flush=True)
            time.sleep(0.1)
        seconds = time.perf_counter() - started
    finally:
        if procs is not None:
            procs.stop()
        purge_queue(app.context.queue)
        app.close()
    completed, failed = ended.get("completed", 0), ended.get("failed", 0)
    report = [f"{len(ids):,} submitted and verified in {submitted:.1f} s, worker start-up {started - gate:.1f} s "
              "(neither timed)"]
    if done < len(ids):
        report.append(f"cut off after {cap:.0f} s (--load-timeout): {done:,} of {len(ids):,} ended")
    return LoadFigures(seconds, completed, errors=failed, rss_kb=procs.peak_rss_kb(),
                       notes={"report": report, "submitted_s": submitted, "requests": len(ids)})

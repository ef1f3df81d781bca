"""The office's list (issue 15): ``GET /api/v1/requests`` over 100,000 requests in PostgreSQL.

The metadata database gets 100,000 requests (every right, status and channel, deadlines spread over
a year), then the app answers a fixed mix of list calls through the Flask test client, in this
process: the first page and the pages after it, each filter, and the search by reference and by
e-mail address. The figure is each call's time (app + database), p50 and p99 over the mix; the
requests are deleted afterwards, so later cases see the database as before.
"""

from __future__ import annotations

import math
import time

from bench.app import App
from bench.harness import Context, LoadFigures, load_case

REQUESTS = 100_000
ROUNDS = 30  # of the mix below: 30 x 10 calls


@load_case("request_list", f"GET /api/v1/requests over {REQUESTS:,} requests: pages, filters, search (test client)",
           store=None, settings="once", target_p99_ms=200.0)
def request_list(ctx: Context) -> LoadFigures:
    app = App(ctx)
    engine = app.context.runtime.engine
    from sqlalchemy import text

    with engine.begin() as conn:
        conn.execute(text("""
            INSERT INTO requests (id, reference, type, status, email, locale, details, channel, received_at, due_at,
                                  legal_end, target_on, password_protected, version, updated_at)
            SELECT gen_random_uuid(), 'BENCH-' || lpad(i::text, 7, '0'),
                   (ARRAY['access','rectification','erasure','restriction','portability','objection'])[1 + i % 6],
                   (ARRAY['received','verified','in_progress','completed','failed','awaiting_approval'])[1 + i % 6],
                   'person' || (i % 20000) || '@example.com', 'de', '{}', 'api',
                   now() - (i % 365) * interval '1 day', now() - (i % 365) * interval '1 day' + interval '1 month',
                   (now() - (i % 365) * interval '1 day' + interval '1 month')::date,
                   (now() - (i % 365) * interval '1 day' + interval '25 days')::date, false, 1, now()
            FROM generate_series(1, :n) AS i"""), {"n": REQUESTS})
        conn.execute(text("ANALYZE requests"))
    try:
        calls = ["", "&status=received&status=verified", "&overdue=true", "&due_within_days=7", "&type=erasure",
                 "&q=BENCH-0054321", "&q=person123@example.com", "&status=completed&type=access"]
        latencies: list[float] = []
        errors = 0
        started = time.perf_counter()
        for _ in range(ROUNDS):
            nxt = None
            for query in [*calls, "PAGE2", "PAGE3"]:
                if query.startswith("PAGE"):
                    url = f"/api/v1/requests?limit=50&after={nxt}"
                else:
                    url = f"/api/v1/requests?limit=50{query}"
                t0 = time.perf_counter()
                answer = app.client.get(url, headers=app.auth)
                latencies.append(time.perf_counter() - t0)
                if answer.status_code != 200:
                    errors += 1
                    continue
                if query in ("", "PAGE2"):
                    nxt = answer.get_json()["next"]
        seconds = time.perf_counter() - started
    finally:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM requests WHERE reference LIKE 'BENCH-%'"))
    ordered = sorted(latencies)

    def pct(q: float) -> float:
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)] * 1000

    return LoadFigures(seconds, len(latencies) - errors, errors, p50_ms=pct(0.5), p99_ms=pct(0.99),
                       max_ms=ordered[-1] * 1000, notes={"report": [f"{REQUESTS:,} requests in the table"]})

"""Intake: ``POST /api/v1/requests`` through gunicorn (``dsr web`` with ``DSR_ENV=production``) on
loopback, offered at a fixed rate (``--rate``, default 200/s) for ``--duration`` seconds.

Open loop: request i is due at ``t0 + i / rate`` whatever happened to the ones before, and its
latency is counted from that due time, not from when it was actually sent; so a server that falls
behind shows it in the latencies (no coordinated omission). The load generator is this case's
process (asyncio, one TCP connection per request: gunicorn's sync workers close after each
response); gunicorn runs in its own processes with its default worker count (2 x cores + 1).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import socket
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from urllib.request import urlopen

from bench.app import START_WAIT, Processes, environment
from bench.harness import Context, LoadFigures, load_case

GRACE = 10.0  # seconds the last requests may take after the offered window before they count as errors
WARM_UP = (20.0, 2.0)  # rate, seconds: every gunicorn worker has its app and pool ready before the clock


@dataclass
class Offered:
    sent: int
    latencies: list[float] = field(default_factory=list)  # seconds, of the 202s, from each one's due time
    errors: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0  # from the first due time to the last answer

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)] * 1000 if ordered else float("nan")


@load_case("intake", "POST /api/v1/requests through gunicorn on loopback, open loop at a fixed rate",
           store=None, settings="rate", target_p99_ms=100.0)
def intake(ctx: Context) -> LoadFigures:
    rate, duration = float(ctx.options["rate"]), float(ctx.options["duration"])
    port = _free_port()
    env = environment(ctx, DSR_ENV="production", DSR_BASE_URL=f"http://127.0.0.1:{port}")  # required in production
    web = Processes(ctx, env, ["--log-level", "WARNING", "web", "--host", "127.0.0.1", "--port", str(port)], 1,
                    name="web")
    try:
        _wait_healthy(port, web)
        asyncio.run(offer(port, *WARM_UP, tag="warm-up"))
        print(f"    gunicorn up on 127.0.0.1:{port}; offering {rate:g}/s for {duration:g} s", flush=True)
        result = asyncio.run(offer(port, rate, duration))
    finally:
        web.stop()
    report = [f"{result.sent:,} offered, {len(result.latencies):,} answered 202"]
    if result.errors:
        report.append("errors: " + ", ".join(f"{k} x{v}" for k, v in result.errors.most_common()))
    report.append(f"gunicorn workers: {os.environ.get('WEB_CONCURRENCY') or 2 * (os.cpu_count() or 1) + 1}")
    return LoadFigures(result.seconds, len(result.latencies), errors=sum(result.errors.values()),
                       rss_kb=web.peak_rss_kb(), offered_per_s=rate, p50_ms=result.percentile(0.50),
                       p99_ms=result.percentile(0.99), max_ms=result.percentile(1.0), notes={"report": report})


async def offer(port: int, rate: float, duration: float, tag: str = "intake") -> Offered:
    """Send ``rate * duration`` submissions, each at its due time, and wait for them (``GRACE``)."""
    loop = asyncio.get_running_loop()
    run = uuid.uuid4().hex[:8]
    result = Offered(sent=max(1, int(rate * duration)))
    t0 = loop.time() + 0.05
    last = t0

    async def one(i: int, due: float) -> None:
        nonlocal last
        body = json.dumps({"type": "access", "email": f"{tag}-{run}-{i}@example.com", "locale": "de"}).encode()
        head = (f"POST /api/v1/requests HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(head + body)
                status_line = await reader.readline()
                await reader.read()  # to the end: the server closes after the response
            finally:
                writer.close()
            status = int(status_line.split()[1]) if status_line else 0
        except (OSError, ValueError, IndexError) as exc:
            result.errors[type(exc).__name__] += 1
            return
        answered = loop.time()
        last = max(last, answered)
        if status == 202:
            result.latencies.append(answered - due)
        else:
            result.errors[f"HTTP {status}"] += 1

    tasks = []
    for i in range(result.sent):
        due = t0 + i / rate
        if (wait := due - loop.time()) > 0:
            await asyncio.sleep(wait)
        tasks.append(asyncio.create_task(one(i, due)))
    _done, pending = await asyncio.wait(tasks, timeout=max(0.1, t0 + duration + GRACE - loop.time()))
    for task in pending:
        task.cancel()
    result.errors.update({"no answer in time": len(pending)} if pending else {})
    result.seconds = last - t0
    return result


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(port: int, web: Processes) -> None:
    deadline = time.monotonic() + START_WAIT
    while True:
        web.check()
        try:
            with urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"gunicorn did not answer /healthz within {START_WAIT:.0f} s\n{web.tail()}")
        time.sleep(0.1)

"""Cases, and running each one in a process of its own.

A case is a function ``(Context) -> Figures`` registered with ``@case``. It runs in a freshly
spawned process (``multiprocessing`` spawn: nothing inherited from the harness), times the work
itself (imports and set-up excluded) and returns the seconds and rows; the peak RSS is that
process's own high-water mark (VmHWM), unless the case measured a process of its own (the RQ worker) and
says so in ``Figures.rss_kb``. The runner repeats a case ``k`` times and keeps the best time and
the highest peak RSS.

Adding a case::

    @case("collect_jsonl", "JsonlConnector.collect of the web logs")
    def collect_jsonl(ctx: Context) -> Figures:
        connector = ...                      # set-up, not timed
        with stopwatch() as watch:
            result = connector.collect(...)
        return Figures(watch.seconds, result.total)
"""

from __future__ import annotations

import multiprocessing
import resource
import shutil
import signal
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

SPAWN = multiprocessing.get_context("spawn")


@dataclass(frozen=True)
class Context:
    """Everything a case needs, picklable: it crosses into the case's own process."""

    size: int  # usage records the subject was given (the size asked for)
    store_url: str  # SQLAlchemy URL of the demo portal database (dsr_bench)
    subject_email: str
    subject_key: int  # accounts.id of the subject
    floor_queries: tuple[tuple[str, str], ...]  # (table, SELECT of the subject's rows): the COPY floor
    meta_url: str  # metadata database for the end-to-end case (migrated)
    redis_url: str
    queue: str
    log_dir: Path  # demo logs: <log_dir>/web, <log_dir>/api
    media_dir: Path
    datamap: Path  # the default data map without processor stores (see bench.data.local_datamap)
    project_dir: Path
    work_dir: Path = Path()  # a fresh, empty folder for this one run; removed afterwards unless keep_files
    keep_files: bool = False  # --keep-files: the last run's folder stays (worker logs, packages)
    events_dir: Path | None = None  # an analytics export of ``size`` events (bench.data.build_events)
    timeout: float = 600.0
    options: dict[str, Any] = field(default_factory=dict)  # a load case's setting (workers, rate, ...)


@dataclass
class Figures:
    seconds: float
    rows: int
    rss_kb: int | None = None  # peak RSS of the process that did the work, when not the case's own
    notes: dict[str, Any] = field(default_factory=dict)
    pages: int | None = None  # of a rendered PDF


@dataclass
class LoadFigures:
    """What one setting of a load case measured: ``done`` requests (completed, or answered 2xx) in
    ``seconds``; for intake also the offered rate and the latencies (from the intended send time)."""

    seconds: float
    done: int
    errors: int = 0
    rows: int = 0
    rss_kb: int | None = None
    offered_per_s: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Case:
    name: str
    run: Callable[[Context], Figures]
    description: str
    # The reference it is timed beside (default: COPY of the subject's rows, bench.cases.copy_floor);
    # erasure would name a plain DELETE of the same rows.
    floor: Callable[[Context], Figures] | None = None
    resets_store: bool = False  # the case (or its floor) changes the store: rebuilt before every run
    target_ratio: float | None = None  # at or above target_from rows
    target_rss_mb: float | None = None
    target_seconds: float | None = None
    target_pages: int | None = None
    target_from: int = 1_000_000


CASES: dict[str, Case] = {}


def case(name: str, description: str, **targets: Any) -> Callable[[Callable[[Context], Figures]],
                                                                    Callable[[Context], Figures]]:
    """Register a per-size case under ``name`` (the order of registration is the order of the report)."""

    def register(func: Callable[[Context], Figures]) -> Callable[[Context], Figures]:
        CASES[name] = Case(name, func, description, **targets)
        return func

    return register


@dataclass(frozen=True)
class LoadCase:
    """A case run once per setting (e.g. 1, 2 and 4 workers), not per size: throughput, latency."""

    name: str
    run: Callable[[Context], LoadFigures]
    description: str
    store: str | None  # "largest": the per-size store of the largest size; "many": many small subjects
    settings: str  # the option each setting varies: "workers" or "rate"
    target_speedup: float | None = None  # from 1 to 2 workers
    target_p99_ms: float | None = None


LOAD_CASES: dict[str, LoadCase] = {}


def load_case(name: str, description: str, *, store: str | None, settings: str,
              **targets: Any) -> Callable[[Callable[[Context], LoadFigures]], Callable[[Context], LoadFigures]]:
    """Register a load case: run once for every value of ``settings`` (``ctx.options[settings]``)."""

    def register(func: Callable[[Context], LoadFigures]) -> Callable[[Context], LoadFigures]:
        LOAD_CASES[name] = LoadCase(name, func, description, store, settings, **targets)
        return func

    return register


class Stopwatch:
    seconds: float = 0.0


@contextmanager
def stopwatch() -> Iterator[Stopwatch]:
    watch = Stopwatch()
    started = time.perf_counter()
    try:
        yield watch
    finally:
        watch.seconds = time.perf_counter() - started


class CaseFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class Measured:
    seconds: float  # best of the runs
    rows: int
    rss_mb: float  # highest peak of the runs
    runs: tuple[float, ...]
    notes: dict[str, Any]
    pages: int | None = None


def peak_rss_kb() -> int:
    """This process's own peak RSS (VmHWM). Not ``ru_maxrss``: Linux carries that across ``exec``
    from the process that forked us, so a spawned child would report its parent's size."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def exit_on_sigterm() -> None:
    """SIGTERM ends the process through SystemExit, so ``finally`` blocks stop what it started
    (workers, gunicorn) and drop what it made."""

    def stop(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def _child(func: Callable[[Context], Any], ctx: Context, conn: Any) -> None:
    exit_on_sigterm()
    try:
        figures = func(ctx)
        if figures.rss_kb is None:
            figures = replace(figures, rss_kb=peak_rss_kb())
        conn.send(("ok", figures))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def run_once(func: Callable[[Context], Any], ctx: Context) -> Any:
    """One run of ``func`` in a spawned process, bounded by ``ctx.timeout``."""
    shutil.rmtree(ctx.work_dir, ignore_errors=True)
    ctx.work_dir.mkdir(parents=True)
    receive, send = SPAWN.Pipe(duplex=False)
    process = SPAWN.Process(target=_child, args=(func, ctx, send), daemon=True)
    process.start()
    send.close()
    answered = False
    try:
        if not receive.poll(ctx.timeout):
            raise CaseFailed(f"{func.__name__} gave no answer within {ctx.timeout:.0f} s")
        try:
            status, payload = receive.recv()
            answered = True
        except EOFError:
            raise CaseFailed(f"{func.__name__}: its process died (exit code {process.exitcode})") from None
        if status != "ok":
            raise CaseFailed(f"{func.__name__} failed:\n{payload}")
        return payload
    finally:
        if not answered and process.is_alive():
            process.terminate()  # cut off (timeout, or the run itself was stopped): it cleans up, see _child
        process.join(30)
        if process.is_alive():
            process.kill()
            process.join(10)
        receive.close()
        if not ctx.keep_files:
            shutil.rmtree(ctx.work_dir, ignore_errors=True)


def measure(func: Callable[[Context], Figures], ctx: Context, repeat: int,
            before: Callable[[], None] | None = None) -> Measured:
    """Best time of ``repeat`` runs, each in a fresh process; the highest peak RSS of them.
    ``before`` runs ahead of every run (untimed): e.g. rebuild a store the case changes."""
    runs = []
    for _ in range(max(1, repeat)):
        if before is not None:
            before()
        runs.append(run_once(func, ctx))
    best = min(runs, key=lambda f: f.seconds)
    return Measured(
        seconds=best.seconds, rows=best.rows, rss_mb=max(f.rss_kb or 0 for f in runs) / 1024,
        runs=tuple(f.seconds for f in runs), notes=best.notes, pages=best.pages,
    )

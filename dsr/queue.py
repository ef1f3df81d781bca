"""RQ wiring: the Redis connection (real, or in-process for the embedded default), the outbox
dispatcher, and the worker classes that bind a Runtime to each job they perform.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry as RedisRetry
from rq import Queue, Retry, SimpleWorker, Worker
from rq.exceptions import NoSuchJobError, StopRequested
from rq.job import Dependency, Job, JobStatus
from rq.scheduler import RQScheduler
from rq.timeouts import TimerDeathPenalty

from dsr import runtime as runtimes
from dsr.config import Settings
from dsr.outbox import JobSpec

if TYPE_CHECKING:
    from dsr.domain.recovery import Recovered
    from dsr.domain.retention_register import RunReport

log = logging.getLogger(__name__)

JOB_TIMEOUT = 3600


def connect(settings: Settings) -> redis.Redis:
    if settings.redis_url:
        # Fail fast when Redis is down (one try, short connect timeout): the outbox keeps the
        # jobs, so a web request should not hang for seconds in redis-py's default retries.
        return redis.Redis.from_url(settings.redis_url, health_check_interval=30, socket_connect_timeout=3,
                                    retry=RedisRetry(NoBackoff(), 1))
    import fakeredis

    # One in-process server per connection set: the queue and the worker thread share it.
    return fakeredis.FakeRedis(server=fakeredis.FakeServer())


class RqDispatcher:
    def __init__(self, queue: Queue, retry_intervals: Sequence[int]) -> None:
        self.queue = queue
        # Store jobs meet flaky networks and busy databases: retried with these pauses (seconds).
        self.retry_intervals = list(retry_intervals)

    def send(self, job: JobSpec) -> None:
        depends_on = Dependency(jobs=list(job.depends_on), allow_failure=True) if job.depends_on else None
        # Every job kind is retried (each is idempotent): a store's flaky network, the database away for a
        # moment, a work horse killed. What is still undone after the last retry the watchdog finds.
        retry = Retry(max=len(self.retry_intervals), interval=self.retry_intervals) if self.retry_intervals else None
        options: dict[str, Any] = {"job_id": job.job_id, "depends_on": depends_on, "retry": retry,
                                   "job_timeout": JOB_TIMEOUT, "result_ttl": 24 * 3600, "failure_ttl": 30 * 24 * 3600}
        if job.not_before is not None and job.not_before > datetime.now(UTC):
            # RQ's scheduler keeps whole seconds and may run a job up to a second early: round up,
            # so "not before" holds (a processor asked again too soon just answers "pending").
            at = job.not_before.replace(microsecond=0) + timedelta(seconds=1)
            self.queue.enqueue_at(at, job.function, *job.args, **options)
        else:
            self.queue.enqueue(job.function, *job.args, **options)

    def is_known(self, job_id: str) -> bool:
        try:
            status = Job.fetch(job_id, connection=self.queue.connection).get_status()
        except NoSuchJobError:
            return False
        return status in (JobStatus.QUEUED, JobStatus.STARTED, JobStatus.DEFERRED, JobStatus.SCHEDULED)


class _BindsRuntime:
    """Mixin: each job runs with the worker's Runtime bound, so job functions stay argument-thin."""

    runtime: runtimes.Runtime

    def perform_job(self, job: Job, queue: Queue, execution: Any) -> bool:
        self.runtime.after_fork()
        with runtimes.bound(self.runtime):
            return super().perform_job(job, queue, execution)  # type: ignore[misc]

    def unsubscribe(self) -> None:
        # RQ sends UNSUBSCRIBE and then stops its command-listener thread, which waits for messages 60 s
        # at a time: when the reply wins that race the thread waits on for up to 60 s, and since redis-py
        # 8.2 stop() joins it, so work() does too. So: tell the thread to stop without waiting for it,
        # then UNSUBSCRIBE, whose reply wakes it to see that and end.
        thread = self.pubsub_thread  # type: ignore[attr-defined]
        if thread:
            try:
                thread.stop(timeout=0)  # redis-py >= 8.2: clear the flag, join for 0 s
            except TypeError:
                thread.stop()  # earlier: clears the flag, never joins
        super().unsubscribe()  # type: ignore[misc]


class DsrWorker(_BindsRuntime, Worker):
    """Production worker: forks a work horse per job (memory released, hard timeouts).

    What every job needs is loaded once, here, before the first fork (``preload``): the job modules,
    WeasyPrint with its fonts, the stores' reflected tables. A work horse starts with all of it.
    The tables are reflected again before a job once they are older than ``REFLECT_SECONDS``, so a
    store's changed schema is seen without a restart."""

    REFLECT_SECONDS = 60.0

    def __init__(self, *args: Any, runtime: runtimes.Runtime, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.runtime = runtime
        self._warmed = 0.0

    def preload(self) -> None:
        preload(self.runtime)
        self._warmed = time.monotonic()
        _freeze()

    def execute_job(self, job: Job, queue: Queue) -> None:
        if self._warmed and time.monotonic() - self._warmed > self.REFLECT_SECONDS:
            gc.unfreeze()  # what the fresh reflection replaces may be collected again
            warm_connectors(self.runtime, fresh=True)
            self._warmed = time.monotonic()
            _freeze()
        super().execute_job(job, queue)


def _freeze() -> None:
    """Move everything the worker has loaded out of the garbage collector's sight before it forks
    work horses (Python's advice for pre-fork servers, ``gc.freeze``): a horse's collections then
    never walk the inherited modules, WeasyPrint and reflected tables, so they neither cost CPU nor
    copy those pages."""
    gc.collect()
    gc.freeze()


def preload(runtime: runtimes.Runtime) -> None:
    """Import and warm up in this process what the jobs use, so that forked work horses inherit it."""
    import tempfile

    import workers.jobs  # noqa: F401  (and with it the domain and the exports)
    from dsr.exports import report

    with tempfile.TemporaryDirectory(prefix="dsr-warm-up-") as scratch:
        report.warm_up(runtime.datamap, Path(scratch))
    warm_connectors(runtime)


def warm_connectors(runtime: runtimes.Runtime, *, fresh: bool = False) -> None:
    """Build each store's connector; those that can (SQL) reflect their tables now. A store that is
    unreachable is left for the jobs, which retry it."""
    for name in runtime.datamap.stores:
        try:
            connector = runtime.connector(name)
            warm = getattr(connector, "warm", None)
            if warm is not None:
                if fresh:
                    connector.close()
                warm()
        except Exception as exc:  # the job that needs it reports it, with retries
            log.warning("store %s not warmed up: %s", name, exc)


class DsrSimpleWorker(_BindsRuntime, SimpleWorker):
    """Runs jobs in its own thread: for the embedded default and for tests."""

    death_penalty_class = TimerDeathPenalty  # signals belong to the main thread

    def __init__(self, *args: Any, runtime: runtimes.Runtime, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.runtime = runtime
        self._waiting = False

    def _install_signal_handlers(self) -> None:
        pass

    def stop_when_idle(self) -> None:
        """Thread-safe stop: RQ's request_stop() installs signal handlers, which only the main thread may."""
        self._stop_requested = True

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        self._waiting = True
        try:
            return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
        finally:
            self._waiting = False

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        # RQ's wait loop heartbeats after each empty poll: the one place to leave it between jobs.
        if self._stop_requested and self._waiting:
            raise StopRequested()
        super().heartbeat(timeout, pipeline)


def make_queue(settings: Settings, connection: redis.Redis) -> Queue:
    return Queue(settings.queue_name, connection=connection)


class EmbeddedWorker:
    """A worker thread inside the web process, on the in-process Redis: one process, whole system.

    RQ's scheduler (retries with a pause) normally runs as a forked process, which would not
    share the in-process Redis; here a second thread asks RQ's own scheduler to move due jobs.
    """

    POLL_SECONDS = 1

    def __init__(self, runtime: runtimes.Runtime, queue: Queue) -> None:
        # worker_ttl 16 -> RQ blocks at most 1 s waiting for a job, so stop() is prompt.
        self.worker = DsrSimpleWorker([queue], connection=queue.connection, runtime=runtime, worker_ttl=16)
        self.scheduler = RQScheduler([queue], connection=queue.connection)
        self.scheduler.prepare_registries([queue.name])
        self._stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._work, name="dsr-embedded-worker", daemon=True),
            threading.Thread(target=self._schedule, name="dsr-embedded-scheduler", daemon=True),
        ]

    def _work(self) -> None:
        self.worker.work(logging_level="WARNING")

    def _schedule(self) -> None:
        while not self._stop.wait(self.POLL_SECONDS):
            try:
                self.scheduler.enqueue_scheduled_jobs()
            except Exception:
                log.exception("moving scheduled jobs failed")

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self.worker.stop_when_idle()
        for thread in self.threads:
            thread.join(timeout)


class Sweeper:
    """Every ``interval`` seconds, send outbox jobs that were not sent after their commit.

    Runs outside the queue on purpose: it exists for the moments the queue is unreachable. Once a day
    (the first sweep of each day in DSR_TIMEZONE) it also runs the retention register's erasures.
    """

    def __init__(self, runtime: runtimes.Runtime, interval: float) -> None:
        self.runtime, self.interval = runtime, interval
        self._retention_day: date | None = None  # the day the retention run last ran to its end
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self.run, name="dsr-sweeper", daemon=True)

    def sweep_once(self) -> int:
        from dsr.outbox import sweep

        assert self.runtime.dispatcher is not None
        grace = timedelta(seconds=self.runtime.settings.outbox_grace_seconds)
        return sweep(self.runtime.sessions, self.runtime.dispatcher, older_than=grace)

    def recover_once(self) -> Recovered:
        """The watchdog's pass: work no live job will finish gets a new job (``dsr.domain.recovery``)."""
        from dsr.domain.planning import AUTOMATED
        from dsr.domain.recovery import recover

        assert self.runtime.dispatcher is not None
        grace = timedelta(seconds=self.runtime.settings.outbox_grace_seconds)
        return recover(self.runtime.sessions, self.runtime.dispatcher.is_known, grace=grace, automated=AUTOMATED)

    def purge_once(self) -> int:
        from dsr.domain.retention import purge_expired

        return purge_expired(self.runtime.sessions, self.runtime.storage)

    def retention_once(self, today: date | None = None) -> RunReport:
        """The retention register's run: erase the kept records whose date has come (ER-05, AT-33)."""
        from dsr.domain.retention_register import run_due

        rt = self.runtime
        return run_due(rt.sessions, rt.datamap, rt.connector, today or self._today())

    def _today(self) -> date:
        return datetime.now(ZoneInfo(self.runtime.settings.timezone)).date()

    def run(self) -> None:
        while not self._stop.wait(self.interval):
            # Each duty on its own: Redis being away stops sending and recovery, not the purge of
            # expired exports nor the retention run (which need only the database, the disk, the stores).
            for name, duty in (("sending the outbox", self._send), ("recovery", self.recover_once),
                               ("purging expired exports", self._purge), ("the retention run", self._retention)):
                try:
                    duty()
                except Exception:
                    log.exception("sweeper: %s failed; trying again in %ss", name, self.interval)

    def _send(self) -> None:
        sent = self.sweep_once()
        if sent:
            log.info("sweeper sent %d job(s) from the outbox", sent)

    def _purge(self) -> None:
        purged = self.purge_once()
        if purged:
            log.info("sweeper purged %d expired export(s)", purged)

    def _retention(self) -> None:
        """Once a day: a run that fails as a whole (the database away) is tried again at the next sweep;
        a store that fails within it waits for tomorrow's run (the report names it)."""
        today = self._today()
        if self._retention_day == today:
            return
        report = self.retention_once(today)
        self._retention_day = today
        if report.erased:
            log.info("retention run: %d record(s) erased in %d table(s)", report.deleted, len(report.erased))
        for failed in report.failed:
            log.error("retention run: store %s failed, its entries stay kept until the next run: %s",
                      failed["store"], failed["error"])
        for skipped in report.skipped:
            log.warning("retention run: %s %s.%s: %s", skipped["reference"], skipped["store"], skipped["table"],
                        skipped["reason"])

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()


def purge_queue(queue: Queue) -> None:
    """Remove a queue and everything of it from Redis: jobs in every registry, results, stopped
    workers' records. For tests and benchmarks that share a Redis; never for a live queue."""
    from rq.results import Result
    from rq.worker_registration import clean_worker_registry

    connection = queue.connection
    registries = (queue.deferred_job_registry, queue.scheduled_job_registry, queue.finished_job_registry,
                  queue.failed_job_registry, queue.started_job_registry, queue.canceled_job_registry)
    job_ids = set(queue.get_job_ids())
    for registry in registries:
        job_ids.update(registry.get_job_ids())
    for job_id in job_ids:
        job = Job(job_id, connection=connection)  # only for its key names (RQ's own spelling)
        connection.delete(job.key, job.dependents_key, job.dependencies_key, Result.get_key(job_id))
    for registry in registries:
        connection.delete(registry.key)
    for worker in Worker.all(connection=connection, queue=queue):
        connection.delete(worker.key)
    clean_worker_registry(queue)
    queue.delete(delete_jobs=True)
